"""Motion primitives shared by the tabletop experts (each task's expert lives in its task file).

An expert is a small state machine over waypoints. ``move_to`` turns a target pose into a
normalised action with a saturating proportional controller, so experts act through the
same action space as any policy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlagym.envs.core import Expert
from vlagym.envs.tabletop.panda import MAX_DPOS, MAX_DYAW

OPEN, CLOSE = -1.0, 1.0
HOVER = 0.09  # clearance above an object before descending onto it
LIFT_Z = 0.18


def wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class TabletopExpert(Expert):
    """Base for tabletop experts with the pick primitive that most tasks share."""

    def __init__(self, task, noise: float = 0.0, seed: int | None = None) -> None:
        super().__init__(task, noise=noise, seed=seed)
        self.phase = "start"
        self.wait = 0
        self.sim = task.sim
        self.robot = task.env.robot

    def _noise_mask(self) -> np.ndarray:
        # The gripper bit stays clean: a flipped bit drops the object, which no demo should show.
        return np.array([1, 1, 1, 1, 0], dtype=np.float32)

    # --- state --------------------------------------------------------------------------------------------
    def ee(self) -> tuple[np.ndarray, float]:
        return self.robot.ee_pose()

    def obj(self, index: int) -> tuple[np.ndarray, float]:
        name = self.task.name_of(index)
        return self.sim.position(name), self.sim.yaw(name)

    def grasp_yaw(self, index: int) -> float:
        """Gripper yaw that aligns the fingers with the object, closest to the current yaw."""
        spec = self.task.objects[index]
        _, cur = self.ee()
        if spec.shape == "cylinder":
            return cur
        _, yaw = self.obj(index)
        candidates = [wrap(yaw + k * np.pi / 2) for k in range(4)]
        return min(candidates, key=lambda a: abs(wrap(a - cur)))

    # --- control ------------------------------------------------------------------------------------------
    def move_to(self, pos, yaw: float | None = None, gripper: float = OPEN, gain: float = 1.0) -> np.ndarray:
        ee, cur_yaw = self.ee()
        dpos = gain * (np.asarray(pos) - ee) / MAX_DPOS
        n = np.abs(dpos).max()
        if n > 1.0:  # keep the direction, saturate the speed
            dpos = dpos / n
        dyaw = 0.0 if yaw is None else np.clip(wrap(yaw - cur_yaw) / MAX_DYAW, -1, 1)
        return np.array([*dpos, dyaw, gripper], dtype=np.float32)

    def near(self, pos, tol: float = 0.01) -> bool:
        return bool(np.linalg.norm(np.asarray(pos) - self.ee()[0]) < tol)

    def yaw_near(self, yaw: float, tol: float = 0.05) -> bool:
        return abs(wrap(yaw - self.ee()[1])) < tol

    def pick(self, index: int) -> np.ndarray | None:
        """Advance the pick state machine; returns an action, or None once the object is held high.

        Phases: above -> descend -> close -> lift. If the object slips out (not grasped while
        lifting), start again from above.
        """
        spec = self.task.objects[index]
        pos, _ = self.obj(index)
        grip_z = max(pos[2], 0.015) if spec.shape == "cube" else max(pos[2] + 0.005, 0.015)
        if self.phase in ("start", "above"):
            self.phase = "above"
            target = np.array([pos[0], pos[1], pos[2] + spec.height / 2 + HOVER])
            yaw = self.grasp_yaw(index)
            if self.near(target, 0.015) and self.yaw_near(yaw):
                self.phase = "descend"
            else:
                return self.move_to(target, yaw)
        if self.phase == "descend":
            target = np.array([pos[0], pos[1], grip_z])
            if self.near(target, 0.008):
                self.phase, self.wait = "close", 0
            else:
                return self.move_to(target, self.grasp_yaw(index))
        if self.phase == "close":
            self.wait += 1
            if self.wait > 3:
                self.phase = "lift"
            return self.move_to(self.ee()[0], None, CLOSE)
        if self.phase == "lift":
            if not self.task.grasped(index):
                self.phase = "above"
                return self.move_to(self.ee()[0] + [0, 0, 0.04], None, OPEN)
            ee = self.ee()[0]
            target = np.array([ee[0], ee[1], LIFT_Z])
            if ee[2] > LIFT_Z - 0.02:
                return None
            return self.move_to(target, None, CLOSE)
        return None
