"""Motion primitives shared by the tabletop experts (each task's expert lives in its task file).

An expert is a small state machine over waypoints. ``move_to`` turns a target pose into a
normalised action with a saturating proportional controller, so experts act through the
same action space as any policy.
"""

from __future__ import annotations

import numpy as np

from vlagym.envs.core import Expert
from vlagym.envs.tabletop.panda import MAX_DPOS, MAX_DYAW

OPEN, CLOSE = -1.0, 1.0
HOVER = 0.09  # clearance above an object before descending onto it
LIFT_Z = 0.18
FINGER_REACH = 0.055  # open fingertip centre from the grasp axis, metres
RETREAT = 0.08  # how far to rise after letting go
CORRIDOR = 0.015  # how far off the object's axis the hand may be once low beside it
PICK_PHASES = ("start", "above", "descend", "close", "lift")


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
        """Gripper yaw that aligns the fingers with the object and keeps them clear of neighbours.

        A cube offers two finger axes (its faces), a cylinder any; among those within a quarter
        turn of the current yaw, take the one whose open fingertips stay farthest from the other
        objects (a finger landing on a bowl wall or a cube blocks the descent), then the one
        needing the least rotation.
        """
        spec = self.task.objects[index]
        pos, obj_yaw = self.obj(index)
        _, cur = self.ee()
        if spec.shape == "cylinder":
            candidates = [wrap(cur + a) for a in np.linspace(-np.pi / 2, np.pi / 2, 13)]
        else:
            candidates = [wrap(obj_yaw + k * np.pi / 2) for k in range(4)]
            candidates = [a for a in candidates if abs(wrap(a - cur)) <= np.pi / 2 + 1e-6]
        return max(candidates, key=lambda a: (round(self.finger_clearance(index, pos, a), 2),
                                              -abs(wrap(a - cur))))

    def finger_clearance(self, index: int, pos: np.ndarray, yaw: float) -> float:
        """Smallest gap (capped at 3 cm) between an open fingertip and another object's footprint."""
        axis = np.array([-np.sin(yaw), np.cos(yaw)])  # the fingers open along the hand's y axis
        tips = [pos[:2] + s * FINGER_REACH * axis for s in (-1.0, 1.0)]
        gap = 0.03
        for j, other in enumerate(self.task.objects):
            if j == index:
                continue
            centre = self.sim.position(self.task.name_of(j))[:2]
            for tip in tips:
                gap = min(gap, float(np.linalg.norm(tip - centre)) - other.footprint)
        return gap

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
        lifting), or the hand ends up low but off to the side of it while descending (a finger
        caught on an edge), start again from above.
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
            ee = self.ee()[0]
            if np.linalg.norm(ee[:2] - pos[:2]) > CORRIDOR and ee[2] < pos[2] + spec.height / 2 + 0.02:
                # Low and off to the side: a finger is caught on the object or a neighbour. Back up.
                self.phase = "above"
                return self.move_to(ee + [0, 0, 0.04], None, OPEN)
            if self.near(target, 0.008):
                self.phase, self.wait, self._hold = "close", 0, self.ee()[0]
            else:
                return self.move_to(target, self.grasp_yaw(index))
        if self.phase == "close":
            self.wait += 1
            # Hold the spot where closing began (drifting while the fingers close rolls the object),
            # and lift as soon as both fingers hold it. A longer pause would teach a cloned policy
            # that a closed hand on the table means "stay": the grasped frames before the lift
            # would mostly be labelled with a zero motion, and the policy stalls there.
            if self.wait > 3 or (self.wait > 1 and self.task.grasped(index)):
                self.phase = "lift"
            else:
                return self.move_to(self._hold, None, CLOSE)
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

    def place(self, index: int, goal, yaw: float | None = None) -> np.ndarray | None:
        """Advance the place state machine for a held object; None once it has been let go and left.

        Phases: carry -> lower -> release -> retreat -> settle. ``goal`` is where the object's
        centre should be when the fingers open (a little above where it will rest); ``yaw`` is
        the gripper yaw to carry it at (None keeps the current one). The object's offset from
        the fingertips is measured every step, so a grasp off-centre still lands on the goal.
        If the object slips out while carried, go back to picking it from above.
        """
        goal = np.asarray(goal, dtype=float)
        pos, _ = self.obj(index)
        ee, _ = self.ee()
        if self.phase in ("carry", "lower") and not self.task.grasped(index):
            self.phase = "above"
            return self.move_to(ee + [0, 0, 0.04], None, OPEN)
        offset = pos - ee
        if self.phase == "carry":
            target = np.array([goal[0] - offset[0], goal[1] - offset[1], max(LIFT_Z, goal[2] - offset[2])])
            if self.near(target, 0.015) and (yaw is None or self.yaw_near(yaw)):
                self.phase = "lower"
            else:
                return self.move_to(target, yaw, CLOSE)
        if self.phase == "lower":
            if np.linalg.norm(pos - goal) < 0.008:
                self.phase, self.wait, self._hold = "release", 0, ee
            else:
                return self.move_to(goal - offset, yaw, CLOSE)
        if self.phase == "release":
            self.wait += 1
            if self.wait > 2:
                self.phase, self._retreat = "retreat", self._hold + [0.0, 0.0, RETREAT]
            return self.move_to(self._hold, None, OPEN)
        if self.phase == "retreat":
            if self.near(self._retreat, 0.015):
                self.phase, self.wait = "settle", 0
            else:
                return self.move_to(self._retreat, None, OPEN)
        if self.phase == "settle":
            self.wait += 1
            if self.wait <= 4:
                return self.move_to(self._retreat, None, OPEN)
        return None

    def pick_and_place(self, index: int, goal, yaw: float | None = None) -> np.ndarray:
        """Pick the object, put it at ``goal``; start over if the episode has not ended by then."""
        if self.phase in PICK_PHASES:
            action = self.pick(index)
            if action is not None:
                return action
            self.phase = "carry"
        action = self.place(index, goal, yaw)
        if action is not None:
            return action
        # Let go and waited, yet no success: the object rolled off or landed askew. Again.
        self.phase = "above"
        return self.pick(index)
