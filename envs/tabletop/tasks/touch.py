"""Touch: "touch the red cube". The easiest task, for RL and smoke tests.

Success: any part of the robot is in contact with the named object.
Dense reward: ``-distance(fingertips, object)`` plus 1 on success.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlagym.envs.tabletop.expert import CLOSE, HOVER, TabletopExpert
from vlagym.envs.tabletop.task import TabletopTask


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

    def sample(self, rng: np.random.Generator):
        target = self.random_spec(rng, target=True)
        return [target], self.phrase(rng, obj=target.words())

    def is_success(self) -> bool:
        return self.touching(0)

    def distance(self) -> float:
        return float(np.linalg.norm(self.ee() - self.sim.position(self.name_of(0))))

    def info(self) -> dict[str, Any]:
        return {**super().info(), "target_distance": self.distance()}

    def dense_reward(self) -> float:
        return -self.distance() + float(self.is_success())

    def expert(self, noise: float = 0.0, seed: int | None = None) -> TouchExpert:
        return TouchExpert(self, noise=noise, seed=seed)


class TouchExpert(TabletopExpert):
    """Hover above the object with a closed gripper, then descend onto its top."""

    def plan(self, obs, info) -> np.ndarray:
        pos, _ = self.obj(0)
        top = pos[2] + self.task.objects[0].height / 2
        above = np.array([pos[0], pos[1], top + HOVER / 2])
        if self.phase == "start" and self.near(above, 0.02):
            self.phase = "descend"
        if self.phase == "descend":
            return self.move_to([pos[0], pos[1], top - 0.02], None, CLOSE, gain=0.6)
        return self.move_to(above, None, CLOSE)
