"""Touch: "touch the red cube". The easiest task, for RL and smoke tests.

Success: any part of the robot is in contact with the named object.
Dense reward: ``-distance(fingertips, object)`` plus 1 on success.

Level L5 (a novel composition of the trained skill): "touch the red cube, then the blue cylinder".
Success: touching the second object after having touched the first; ``target_distance`` and the
dense reward follow the object still to touch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlagym.envs.registry import register_task
from vlagym.envs.tabletop.expert import CLOSE, HOVER, TabletopExpert
from vlagym.envs.tabletop.task import TabletopTask


@register_task("tabletop", "Touch")
class TouchTask(TabletopTask):
    name = "touch"
    max_steps = 50
    templates = (
        "touch the {obj}",
        "reach out and touch the {obj}",
        "put your fingers on the {obj}",
        "tap the {obj}",
        "poke the {obj}",
        "make contact with the {obj}",
    )
    levels = TabletopTask.levels + ("L5",)
    sequence_templates = (
        "touch the {first}, then the {second}",
        "touch the {first} and after that the {second}",
        "first touch the {first}, then touch the {second}",
        "tap the {first}, then tap the {second}",
    )

    def sample(self, rng: np.random.Generator):
        target = self.random_spec(rng, target=True)
        self.first_done = False
        if self.level != "L5":
            return [target], self.phrase(rng, obj=target.words())
        second = self.random_spec(rng, exclude=[target])
        text = str(rng.choice(self.sequence_templates)).format(first=target.words(), second=second.words())
        return [target, second], text

    def composition(self) -> bool:
        return self.level == "L5"

    def max_own_objects(self) -> int:
        return 2 if self.level == "L5" else 1

    def current(self) -> int:
        """Index of the object to touch now (the second, once the first was touched at L5)."""
        return int(self.composition() and self.first_done)

    def is_success(self) -> bool:
        if not self.composition():
            return self.touching(0)
        if self.touching(0):  # idempotent within a step: the env asks once, info and reward may ask again
            self.first_done = True
        return self.first_done and self.touching(1)

    def distance(self) -> float:
        return float(np.linalg.norm(self.ee() - self.sim.position(self.name_of(self.current()))))

    def role_targets(self):
        """The object to touch now: at L5, the second once the first was touched."""
        return {"object": self.role_of(self.current())}

    def info(self) -> dict[str, Any]:
        return {**super().info(), "target_distance": self.distance()}

    def dense_reward(self) -> float:
        return -self.distance() + float(self.is_success())

    def expert(self, noise: float = 0.0, seed: int | None = None) -> TouchExpert:
        return TouchExpert(self, noise=noise, seed=seed)


class TouchExpert(TabletopExpert):
    """Hover above the object with a closed gripper, then descend onto its top.

    The hand descends once it is over the object (within 2 cm of its axis) and no higher than
    the hover point; at L5 the object to touch is the one ``task.current()`` names.
    """

    def plan(self, obs, info) -> np.ndarray:
        k = self.task.current()
        pos, _ = self.obj(k)
        top = pos[2] + self.task.objects[k].height / 2
        above = np.array([pos[0], pos[1], top + HOVER / 2])
        ee = self.ee()[0]
        over = np.linalg.norm(ee[:2] - pos[:2]) < 0.02 and ee[2] < above[2] + 0.02
        self.phase = "descend" if over else "above"
        if self.phase == "descend":
            return self.move_to([pos[0], pos[1], top - 0.02], None, CLOSE, gain=0.6)
        return self.move_to(above, None, CLOSE)
