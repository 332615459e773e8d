"""Pick up: "pick up the red cube". Grasp the named cube or cylinder and lift it.

Success: both fingers touch the object (``TabletopTask.grasped``) and its centre is at least
``LIFT_HEIGHT`` above the table, so its bottom has left the table by about 6 cm or more.
Dense reward: ``-distance(fingertips, object)`` while the object is not held; once it is
held, ``0.5 - (height still to go)``; plus 1 on success.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlagym.envs.registry import register_task
from vlagym.envs.tabletop.expert import CLOSE, LIFT_Z, TabletopExpert
from vlagym.envs.tabletop.task import TabletopTask

LIFT_HEIGHT = 0.08  # object centre above the table top (metres)


@register_task("tabletop", "PickUp")
class PickUpTask(TabletopTask):
    name = "pick_up"
    max_steps = 80
    templates = (
        "pick up the {obj}",
        "lift the {obj}",
        "grab the {obj} and lift it up",
        "raise the {obj} off the table",
        "take the {obj} off the table",
        "pick the {obj} up",
        "grasp the {obj} and hold it in the air",
    )

    def sample(self, rng: np.random.Generator):
        target = self.random_spec(rng, target=True)
        return [target], self.phrase(rng, obj=target.words())

    def height(self) -> float:
        return float(self.sim.position(self.name_of(0))[2])

    def is_success(self) -> bool:
        return self.height() >= LIFT_HEIGHT and self.grasped(0)

    def distance(self) -> float:
        return float(np.linalg.norm(self.ee() - self.sim.position(self.name_of(0))))

    def info(self) -> dict[str, Any]:
        return {**super().info(), "target_distance": self.distance(), "grasped": self.grasped(0),
                "lift_height": self.height()}

    def dense_reward(self) -> float:
        success = float(self.is_success())
        if self.grasped(0):
            return 0.5 - max(LIFT_HEIGHT - self.height(), 0.0) + success
        return -self.distance() + success

    def expert(self, noise: float = 0.0, seed: int | None = None) -> PickUpExpert:
        return PickUpExpert(self, noise=noise, seed=seed)


class PickUpExpert(TabletopExpert):
    """Run the shared pick primitive, then hold the object up until the episode ends."""

    def plan(self, obs, info) -> np.ndarray:
        action = self.pick(0)
        if action is not None:
            return action
        ee = self.ee()[0]
        return self.move_to([ee[0], ee[1], LIFT_Z], None, CLOSE)
