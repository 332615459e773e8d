"""Franka Panda with end-effector delta control, solved by inverse kinematics.

Action (float32, 5): ``(dx, dy, dz, dyaw, gripper)`` in [-1, 1]. The first three scale to
at most ``MAX_DPOS`` metres per control step, ``dyaw`` to ``MAX_DYAW`` radians; the gripper
closes when ``gripper >= 0`` and opens otherwise. The commanded pose accumulates (so small
tracking errors do not drift), is clipped to the workspace, and is re-anchored to the
measured pose when the arm is blocked.

Proprioception (float32, 6): end-effector ``x, y, z`` (metres, world frame, table top at
z = 0), ``sin(yaw), cos(yaw)`` of the gripper and the finger opening in metres.
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np
from gymnasium import spaces

from vlagym.envs.core import Robot
from vlagym.envs.sim import Camera, Simulation

ARM_JOINTS = list(range(7))
FINGER_JOINTS = [9, 10]
EE_LINK = 11  # panda_grasptarget: between the fingertips
HAND_LINK = 8
MAX_DPOS = 0.04
MAX_DYAW = 0.25
FINGER_OPEN = 0.04
# (low, high) bounds of the commanded fingertip position.
WORKSPACE = np.array([[0.2, -0.4, 0.008], [0.8, 0.4, 0.5]])
NEUTRAL = [0.0, -0.4, 0.0, -2.4, 0.0, 2.0, 0.785, FINGER_OPEN, FINGER_OPEN]
LOWER = [-2.9, -1.76, -2.9, -3.07, -2.9, -0.02, -2.9, 0.0, 0.0]
UPPER = [2.9, 1.76, 2.9, -0.07, 2.9, 3.75, 2.9, FINGER_OPEN, FINGER_OPEN]
RANGES = [u - lo for lo, u in zip(LOWER, UPPER)]


def panda_urdf() -> str:
    return str(files("vlagym.assets") / "panda" / "panda.urdf")


class Panda(Robot):
    """A fixed-base Panda at the table's edge (base at the origin, facing +x)."""

    action_space = spaces.Box(-1.0, 1.0, (5,), np.float32)
    proprio_space = spaces.Box(np.array([-2, -2, -2, -1, -1, 0], np.float32),
                               np.array([2, 2, 2, 1, 1, 0.1], np.float32), dtype=np.float32)

    def __init__(self, wrist_camera: bool = False, image_size: tuple[int, int] = (128, 128)) -> None:
        self.sim: Simulation | None = None
        self.wrist_camera = wrist_camera
        self._wrist = Camera(eye=(0, 0, 1), target=(0, 0, 0), up=(1, 0, 0), fov=70.0,
                             width=image_size[1], height=image_size[0], near=0.01, far=2.0)
        self.start_pos = np.array([0.45, 0.0, 0.25])

    # --- Robot API ----------------------------------------------------------------------------------------
    def load(self, sim: Simulation, rng: np.random.Generator) -> None:
        self.sim = sim
        c = sim.client
        self.id = sim.add("robot", c.loadURDF(panda_urdf(), useFixedBase=True,
                                               flags=c.URDF_ENABLE_CACHED_GRAPHICS_SHAPES))
        for j in FINGER_JOINTS:
            c.changeDynamics(self.id, j, lateralFriction=1.5, spinningFriction=0.01)
        # PyBullet ignores the URDF's <mimic>: without this gear the two fingers, each pressing
        # with the same force, slide together along their axis and a held object sways by cm.
        gear = c.createConstraint(self.id, FINGER_JOINTS[0], self.id, FINGER_JOINTS[1], c.JOINT_GEAR,
                                  [1, 0, 0], [0, 0, 0], [0, 0, 0])
        c.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=50)
        start = self.start_pos + rng.uniform([-0.03, -0.05, -0.03], [0.03, 0.05, 0.03])
        start_yaw = float(rng.uniform(-0.3, 0.3))
        # Solve the start configuration kinematically, then place the arm there at rest.
        q = list(NEUTRAL)
        for _ in range(3):
            for j, qj in zip(ARM_JOINTS + FINGER_JOINTS, q[:7] + q[7:]):
                c.resetJointState(self.id, j, qj)
            q = self._ik(start, start_yaw)
        self.target_pos = start.copy()
        self.target_yaw = start_yaw
        self.gripper_closed = False
        self._hold()

    def apply_action(self, action: np.ndarray) -> None:
        pos, yaw = self.ee_pose()
        # Re-anchor when the arm cannot follow (pushing on the table or an object).
        if np.linalg.norm(self.target_pos - pos) > 0.03:
            self.target_pos = pos.copy()
        self.target_pos = np.clip(self.target_pos + MAX_DPOS * action[:3], WORKSPACE[0], WORKSPACE[1])
        self.target_yaw = float(np.clip(self.target_yaw + MAX_DYAW * action[3], -np.pi, np.pi))
        self.gripper_closed = bool(action[4] >= 0.0)
        self._command(self._ik(self.target_pos, self.target_yaw))

    def proprio(self) -> np.ndarray:
        pos, yaw = self.ee_pose()
        return np.array([*pos, np.sin(yaw), np.cos(yaw), self.finger_width()], dtype=np.float32)

    def cameras(self) -> dict[str, Camera]:
        if not self.wrist_camera:
            return {}
        if self.sim is not None and hasattr(self, "id"):
            state = self.sim.client.getLinkState(self.id, HAND_LINK, computeForwardKinematics=True)
            rot = np.asarray(self.sim.client.getMatrixFromQuaternion(state[1])).reshape(3, 3)
            eye = np.asarray(state[0]) + rot @ np.array([0.05, 0.0, 0.02])
            self._wrist.look(eye, eye + rot @ np.array([0.0, 0.0, 0.3]), up=rot @ np.array([1.0, 0.0, 0.0]))
        return {"rgb_wrist": self._wrist}

    # --- kinematics ---------------------------------------------------------------------------------------
    def ee_pose(self) -> tuple[np.ndarray, float]:
        state = self.sim.client.getLinkState(self.id, EE_LINK, computeForwardKinematics=True)
        rot = self.sim.client.getMatrixFromQuaternion(state[1])  # row-major 3x3
        # Yaw of the hand's x axis in the table plane (the gripper points down).
        return np.asarray(state[0]), float(np.arctan2(rot[3], rot[0]))

    def label_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """The end-effector link's frame (its z axis points out of the fingers, down when grasping)."""
        state = self.sim.client.getLinkState(self.id, EE_LINK, computeForwardKinematics=True)
        return np.asarray(state[0]), np.asarray(self.sim.client.getMatrixFromQuaternion(state[1])).reshape(3, 3)

    def finger_width(self) -> float:
        c = self.sim.client
        return float(sum(c.getJointState(self.id, j)[0] for j in FINGER_JOINTS))

    def finger_speed(self) -> float:
        """Rate of change of ``finger_width`` in m/s (negative while closing)."""
        c = self.sim.client
        return float(sum(c.getJointState(self.id, j)[1] for j in FINGER_JOINTS))

    def _orientation(self, yaw: float):
        return self.sim.client.getQuaternionFromEuler([np.pi, 0.0, yaw])

    def _ik(self, pos: np.ndarray, yaw: float) -> list[float]:
        q = self.sim.client.calculateInverseKinematics(
            self.id, EE_LINK, list(pos), self._orientation(yaw),
            lowerLimits=LOWER, upperLimits=UPPER, jointRanges=RANGES, restPoses=NEUTRAL,
            maxNumIterations=20, residualThreshold=1e-4,
        )
        return list(q)

    def _command(self, q: list[float]) -> None:
        c = self.sim.client
        c.setJointMotorControlArray(self.id, ARM_JOINTS, c.POSITION_CONTROL, targetPositions=q[:7],
                                    forces=[87.0] * 4 + [12.0] * 3)
        finger = 0.0 if self.gripper_closed else FINGER_OPEN
        c.setJointMotorControlArray(self.id, FINGER_JOINTS, c.POSITION_CONTROL,
                                    targetPositions=[finger, finger], forces=[40.0, 40.0])

    def _hold(self) -> None:
        self._command(self._ik(self.target_pos, self.target_yaw))
