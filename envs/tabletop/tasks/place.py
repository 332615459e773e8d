"""Place: "put the green cylinder in the blue bowl". Pick the named object up and set it in the bowl.

Success: the object's centre is within the bowl's inner radius (less ``MARGIN``) of the bowl's
centre in the table plane, the object rests low (its centre under the wall top plus half its
height, so it is inside the bowl, not on the rim) and the robot no longer touches it.
Dense reward: ``-distance_xy(object, bowl centre) - 0.5 * distance(fingertips, object)`` plus 1
on success.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlagym.envs.registry import register_task
from vlagym.envs.tabletop.expert import TabletopExpert
from vlagym.envs.tabletop.objects import BOWL_WALL_HEIGHT, COLORS, SIZES, ObjectSpec
from vlagym.envs.tabletop.task import TabletopTask

MARGIN = 0.01  # metres inside the bowl's inner wall the object's centre must be
BOWL_FLOOR = 0.008  # top of the bowl's floor above its base
DROP = 0.012  # the expert lets go with the object's bottom this far above the bowl floor


@register_task("tabletop", "Place")
class PlaceTask(TabletopTask):
    name = "place"
    max_steps = 120
    own_objects = 2
    templates = (
        "put the {obj} in the {bowl}",
        "place the {obj} into the {bowl}",
        "drop the {obj} in the {bowl}",
        "move the {obj} into the {bowl}",
        "pick up the {obj} and put it in the {bowl}",
        "set the {obj} inside the {bowl}",
        "the {obj} goes in the {bowl}",
    )

    def sample(self, rng: np.random.Generator):
        target = self.random_spec(rng, target=True)
        colors = [c for c in COLORS if c != target.color]  # "the red cube in the red bowl" reads oddly
        if self.level is not None:
            colors = [c for c in colors if self.allowed(c, "bowl")]
        bowl = ObjectSpec("bowl", str(rng.choice(colors)), str(rng.choice(SIZES)))
        return [target, bowl], self.phrase(rng, obj=target.words(), bowl=bowl.words())

    def bowl_offset(self) -> np.ndarray:
        """The object's position relative to the bowl's base (its centre on the table)."""
        return self.sim.position(self.name_of(0)) - self.sim.position(self.name_of(1))

    def distance(self) -> float:
        return float(np.linalg.norm(self.bowl_offset()[:2]))

    def is_success(self) -> bool:
        target, bowl = self.objects[0], self.objects[1]
        offset = self.bowl_offset()
        return (
            float(np.linalg.norm(offset[:2])) < bowl.half - MARGIN
            and offset[2] < BOWL_WALL_HEIGHT + target.height / 2
            and not self.touching(0)
        )

    def info(self) -> dict[str, Any]:
        return {**super().info(), "target_distance": self.distance(), "grasped": self.grasped(0)}

    label_roles = ("object", "destination")

    def role_targets(self):
        return {"object": self.role_of(0), "destination": self.role_of(1)}  # the bowl's centre

    def dense_reward(self) -> float:
        reach = float(np.linalg.norm(self.ee() - self.sim.position(self.name_of(0))))
        return -self.distance() - 0.5 * reach + float(self.is_success())

    def expert(self, noise: float = 0.0, seed: int | None = None) -> PlaceExpert:
        return PlaceExpert(self, noise=noise, seed=seed)


class PlaceExpert(TabletopExpert):
    """Pick the object, carry it high over the bowl's centre, lower it near the floor, let go."""

    def plan(self, obs, info) -> np.ndarray:
        bowl = self.obj(1)[0]
        goal = bowl + [0.0, 0.0, BOWL_FLOOR + DROP + self.task.objects[0].height / 2]
        return self.pick_and_place(0, goal)

    def placed(self, index: int, goal: np.ndarray) -> bool:
        """Anywhere inside the bowl counts: the success test's position terms."""
        task: PlaceTask = self.task
        target, bowl = task.objects[0], task.objects[1]
        offset = task.bowl_offset()
        return bool(np.linalg.norm(offset[:2]) < bowl.half - MARGIN
                    and offset[2] < BOWL_WALL_HEIGHT + target.height / 2)
