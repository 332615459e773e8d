"""Motion primitives shared by the tabletop experts (each task's expert lives in its task file).

An expert is a small state machine over waypoints whose phase is read from the simulator at
every step (``pick_phase``, ``place_phase``), never carried over from the expert's own earlier
steps. An expert made fresh in the middle of an episode, after some other policy drove the
robot, therefore acts as one that ran from the start would: DAgger can ask it to label any
state. ``move_to`` turns a target pose into a normalised action with a saturating proportional
controller, so experts act through the same action space as any policy.
"""

from __future__ import annotations

import numpy as np

from vlagym.envs.core import Expert
from vlagym.envs.tabletop.panda import FINGER_OPEN, MAX_DPOS, MAX_DYAW

OPEN, CLOSE = -1.0, 1.0
HOVER = 0.09  # clearance above an object before descending onto it
LIFT_Z = 0.18
FINGER_REACH = 0.055  # open fingertip centre from the grasp axis, metres
RETREAT = 0.08  # how far to rise after letting go
CORRIDOR = 0.015  # how far off the object's axis the hand may be once low beside it
PICK_PHASES = ("start", "above", "descend", "close", "lift")
EMPTY_WIDTH = 0.004  # finger opening under which a closing hand holds nothing: the grasp missed
OPENED = 0.9 * 2 * FINGER_OPEN  # finger opening over which a released object is clear of the fingers
FINGERS_STILL = 0.01  # m/s of finger opening under which the fingers have stopped
ALIGN_YAW = 0.1  # radians: the hand counts as turned to the grasp yaw within this


def wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class TabletopExpert(Expert):
    """Base for tabletop experts with the pick primitive that most tasks share."""

    def __init__(self, task, noise: float = 0.0, seed: int | None = None) -> None:
        super().__init__(task, noise=noise, seed=seed)
        self.phase = "start"  # the phase read at the latest step, for messages and tests
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

    def fingers_moving(self) -> bool:
        return abs(self.robot.finger_speed()) > FINGERS_STILL

    def hold(self, gripper: float) -> np.ndarray:
        """Stay where the hand is, with the gripper command given."""
        return np.array([0.0, 0.0, 0.0, 0.0, gripper], dtype=np.float32)

    def near(self, pos, tol: float = 0.01) -> bool:
        return bool(np.linalg.norm(np.asarray(pos) - self.ee()[0]) < tol)

    def yaw_near(self, yaw: float, tol: float = 0.05) -> bool:
        return abs(wrap(yaw - self.ee()[1])) < tol

    def grip_z(self, index: int) -> float:
        spec = self.task.objects[index]
        pos, _ = self.obj(index)
        return max(pos[2], 0.015) if spec.shape == "cube" else max(pos[2] + 0.005, 0.015)

    def hover(self, index: int) -> np.ndarray:
        spec = self.task.objects[index]
        pos, _ = self.obj(index)
        return np.array([pos[0], pos[1], pos[2] + spec.height / 2 + HOVER])

    def pick_phase(self, index: int) -> str:
        """Which pick phase the simulator's state is in: above, descend, close or lift.

        - lift: both fingers hold the object;
        - close: the gripper is commanded shut, the hand is low at the object and the fingers
          have not yet met (or missed) it;
        - descend: the hand is open, over the object's axis and no higher than the hover point,
          turned to the grasp yaw or already below the hover point (the open fingers clear the
          object at any yaw, so a hand that came down unturned turns on the way down, rather
          than going back up: a policy that descends early is shown the short way on);
        - above: anything else, including a closed hand that missed (it opens and rises).
        """
        if self.task.grasped(index):
            return "lift"
        spec = self.task.objects[index]
        pos, _ = self.obj(index)
        ee = self.ee()[0]
        off_axis = float(np.linalg.norm(ee[:2] - pos[:2]))
        low = ee[2] < pos[2] + spec.height / 2 + 0.02
        if self.robot.gripper_closed:
            # Still closing on it: the fingers move and have not shut on nothing. Fingers that
            # stopped without both touching it (one caught on its top or edge) missed.
            closing = self.robot.finger_width() > EMPTY_WIDTH and self.fingers_moving()
            return "close" if low and off_axis < CORRIDOR and closing else "above"
        hover_z = self.hover(index)[2]
        if off_axis < CORRIDOR and ee[2] < hover_z + 0.015 and (
                ee[2] < hover_z - 0.02 or self.yaw_near(self.grasp_yaw(index), ALIGN_YAW)):
            return "descend"
        return "above"

    def pick(self, index: int) -> np.ndarray | None:
        """The pick action for the current state; None once the object is held high.

        Phases (``pick_phase``): above -> descend -> close -> lift. If the object slips out, the
        state says so and picking starts again from above; if the hand ends up low but off to
        the side of the object while descending (a finger caught on an edge), it backs up.
        """
        self.phase = self.pick_phase(index)
        pos, _ = self.obj(index)
        if self.phase == "above":
            target = self.hover(index)
            ee = self.ee()[0]
            spec = self.task.objects[index]
            if np.linalg.norm(ee[:2] - pos[:2]) > CORRIDOR and ee[2] < pos[2] + spec.height / 2 + 0.02:
                # Low and off to the side: a finger is caught on the object or a neighbour. Back up.
                return self.move_to(ee + [0, 0, 0.04], None, OPEN)
            yaw = self.grasp_yaw(index)
            if not (self.near(target, 0.015) and self.yaw_near(yaw)):
                return self.move_to(target, yaw)
            self.phase = "descend"
        if self.phase == "descend":
            target = np.array([pos[0], pos[1], self.grip_z(index)])
            yaw = self.grasp_yaw(index)
            if not (self.near(target, 0.008) and self.yaw_near(yaw, ALIGN_YAW)):
                return self.move_to(target, yaw)
            self.phase = "close"
        if self.phase == "close":
            # Hold still while the fingers close (drifting then rolls the object), and lift as
            # soon as both fingers hold it. A pause after the grasp holds would teach a cloned
            # policy that a closed hand on the table means "stay": the grasped frames before the
            # lift would mostly be labelled with a zero motion, and the policy stalls there.
            return self.hold(CLOSE)
        # lift
        ee = self.ee()[0]
        if ee[2] > LIFT_Z - 0.02:
            return None
        return self.move_to([ee[0], ee[1], LIFT_Z], None, CLOSE)

    def placed(self, index: int, goal: np.ndarray) -> bool:
        """The object rests where it was to be let go (or is falling the last millimetres there).

        Tasks with a wider target (a bowl) override this.
        """
        pos, _ = self.obj(index)
        return bool(np.linalg.norm(pos[:2] - goal[:2]) < 0.012 and -0.02 < pos[2] - goal[2] < 0.01)

    def carry_target(self, index: int, goal: np.ndarray) -> np.ndarray:
        """Where the hand goes to carry the held object high over ``goal``."""
        pos, _ = self.obj(index)
        offset = pos - self.ee()[0]
        return np.array([goal[0] - offset[0], goal[1] - offset[1], max(LIFT_Z, goal[2] - offset[2])])

    def place_phase(self, index: int, goal: np.ndarray, yaw: float | None) -> str:
        """Which phase of pick-and-place the simulator's state is in.

        Held: lift (low, away from the goal), carry, lower (over the goal), or release (at the
        goal). Not held but resting at the goal: release while the fingers are still opening,
        then retreat up, then settle. Anything else: a pick phase.
        """
        ee = self.ee()[0]
        pos, _ = self.obj(index)
        if self.task.grasped(index):
            # At the goal, or let go there and the fingers are still leaving it.
            if np.linalg.norm(pos - goal) < 0.008 or not self.robot.gripper_closed and self.placed(index, goal):
                return "release"
            over = np.linalg.norm(self.carry_target(index, goal)[:2] - ee[:2]) < 0.015
            if over and (yaw is None or self.yaw_near(yaw)) or ee[2] < LIFT_Z - 0.02 and over:
                return "lower"
            return "lift" if ee[2] < LIFT_Z - 0.02 else "carry"
        if self.placed(index, goal):
            if self.robot.gripper_closed or self.robot.finger_width() < OPENED and self.fingers_moving():
                return "release"
            return "retreat" if ee[2] < pos[2] + RETREAT - 0.015 else "settle"
        return self.pick_phase(index)

    def place(self, index: int, goal, yaw: float | None = None) -> np.ndarray | None:
        """The pick-and-place action for the current state (``place_phase``).

        Carry the object high over ``goal``, lower it until its centre is at ``goal`` (a little
        above where it will rest), let go, rise and wait. ``yaw`` is the gripper yaw to carry it
        at (None keeps the current one). The object's offset from the fingertips is measured
        every step, so a grasp off-centre still lands on the goal. If the object slips out, or
        rests after release where it should not, the state says "pick" and picking starts again.
        """
        goal = np.asarray(goal, dtype=float)
        self.phase = self.place_phase(index, goal, yaw)
        if self.phase in PICK_PHASES:
            action = self.pick(index)
            if action is not None:
                return action
            self.phase = "carry"
        pos, _ = self.obj(index)
        ee, _ = self.ee()
        if self.phase == "carry":
            target = self.carry_target(index, goal)
            if not (self.near(target, 0.015) and (yaw is None or self.yaw_near(yaw))):
                return self.move_to(target, yaw, CLOSE)
            self.phase = "lower"
        if self.phase == "lower":
            if np.linalg.norm(pos - goal) >= 0.008:
                return self.move_to(goal - (pos - ee), yaw, CLOSE)
            self.phase = "release"
        if self.phase == "release":
            return self.hold(OPEN)
        if self.phase == "retreat":
            return self.move_to([ee[0], ee[1], pos[2] + RETREAT], None, OPEN)
        return self.hold(OPEN)  # settle: the task judges success once the object is still

    def pick_and_place(self, index: int, goal, yaw: float | None = None) -> np.ndarray:
        """Pick the object and put it at ``goal``, from whatever state the scene is in."""
        return self.place(index, goal, yaw)
