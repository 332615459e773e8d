"""Stack: "stack the purple cube on the orange cube". Put the first named cube on top of the second.

Success: the top cube's centre is within ``0.6 * half-edge`` of the bottom cube's in the table
plane and at the height of resting on it (within ``Z_TOL``), the bottom cube still stands on
the table, the robot no longer touches the top cube, and both cubes are still.
``info["target_distance"]`` is the 3-D distance from the top cube to that resting position.
Dense reward: ``-target_distance - 0.5 * distance(fingertips, top cube)`` plus 1 on success.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlagym.envs.labels import RoleTarget
from vlagym.envs.registry import register_task
from vlagym.envs.tabletop.expert import TabletopExpert, wrap
from vlagym.envs.tabletop.task import TabletopTask

XY_TOL = 0.6  # of the bottom cube's half-edge
Z_TOL = 0.01
STILL = 0.05  # m/s: slower than this counts as resting
DROP = 0.005  # the expert lets go with the top cube this far above its resting height


@register_task("tabletop", "Stack")
class StackTask(TabletopTask):
    name = "stack"
    max_steps = 120
    own_objects = 2
    templates = (
        "stack the {top} on the {bottom}",
        "put the {top} on top of the {bottom}",
        "place the {top} onto the {bottom}",
        "set the {top} on the {bottom}",
        "stack the {top} on top of the {bottom}",
        "pick up the {top} and put it on the {bottom}",
        "build a tower with the {top} on the {bottom}",
    )

    def sample(self, rng: np.random.Generator):
        top = self.random_spec(rng, shapes=("cube",), target=True)
        bottom = self.random_spec(rng, shapes=("cube",), exclude=[top])
        return [top, bottom], self.phrase(rng, top=top.words(), bottom=bottom.words())

    def goal(self) -> np.ndarray:
        """Where the top cube's centre rests when it sits squarely on the bottom cube."""
        top, bottom = self.objects[0], self.objects[1]
        return self.sim.position(self.name_of(1)) + [0.0, 0.0, bottom.half + top.half]

    def distance(self) -> float:
        return float(np.linalg.norm(self.sim.position(self.name_of(0)) - self.goal()))

    label_roles = ("object", "destination")

    def role_targets(self):
        """The top cube, and where its centre rests on the bottom cube (seen through the bottom cube)."""
        base = self.role_of(1)
        return {"object": self.role_of(0),
                "destination": RoleTarget(self.goal(), base.body, base.yaw, base.symmetry)}

    def still(self, index: int) -> bool:
        linear, _ = self.sim.client.getBaseVelocity(self.sim.bodies[self.name_of(index)])
        return float(np.linalg.norm(linear)) < STILL

    def is_success(self) -> bool:
        bottom = self.objects[1]
        error = self.sim.position(self.name_of(0)) - self.goal()
        return (
            float(np.linalg.norm(error[:2])) < XY_TOL * bottom.half
            and abs(error[2]) < Z_TOL
            and abs(self.sim.position(self.name_of(1))[2] - bottom.half) < Z_TOL
            and not self.touching(0)
            and self.still(0)
            and self.still(1)
        )

    def info(self) -> dict[str, Any]:
        return {**super().info(), "target_distance": self.distance(), "grasped": self.grasped(0)}

    def dense_reward(self) -> float:
        reach = float(np.linalg.norm(self.ee() - self.sim.position(self.name_of(0))))
        return -self.distance() - 0.5 * reach + float(self.is_success())

    def expert(self, noise: float = 0.0, seed: int | None = None) -> StackExpert:
        return StackExpert(self, noise=noise, seed=seed)


class StackExpert(TabletopExpert):
    """Pick the top cube, turn it square with the bottom cube, set it down just above it, let go."""

    def plan(self, obs, info) -> np.ndarray:
        goal = self.task.goal() + [0.0, 0.0, DROP]
        yaw = None
        if self.task.grasped(0):  # carrying or lowering it
            # Turn the hand by the cubes' yaw difference, folded into a quarter turn (faces repeat).
            _, top_yaw = self.obj(0)
            _, bottom_yaw = self.obj(1)
            turn = (wrap(bottom_yaw - top_yaw) + np.pi / 4) % (np.pi / 2) - np.pi / 4
            yaw = wrap(self.ee()[1] + turn)
        return self.pick_and_place(0, goal, yaw)

    def placed(self, index: int, goal: np.ndarray) -> bool:
        """Square on the bottom cube: the success test's position terms."""
        task: StackTask = self.task
        error = self.obj(0)[0] - task.goal()
        return bool(np.linalg.norm(error[:2]) < XY_TOL * task.objects[1].half and abs(error[2]) < Z_TOL)
