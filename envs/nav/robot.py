"""A low-poly differential-drive robot with an egocentric camera.

The robot is moved kinematically (``resetBasePositionAndOrientation``) and collides on the
scene's occupancy grid: a disc of ``ROBOT_RADIUS`` that slides along whatever it touches. That
is exact for a round base, deterministic and much cheaper than contact dynamics.

Action, chosen with ``action_mode`` at construction:

* ``"discrete"``, ``Discrete(4)``: 0 stop, 1 forward 0.25 m, 2 turn left 15 deg, 3 turn right 15 deg
  (Habitat / VLN-CE).
* ``"continuous"``, ``Box(-1, 1, (2,))``: (linear, angular) velocity, scaled to at most
  ``MAX_LINEAR`` m/s and ``MAX_ANGULAR`` rad/s over one control period; negative linear reverses.

Proprioception (float32, 6): ``x, y, sin(yaw), cos(yaw)``, linear velocity (m/s, along the
heading, as actually moved) and angular velocity (rad/s).
"""

from __future__ import annotations

import numpy as np
import pybullet as pb
from gymnasium import spaces

from vlagym.envs.core import Robot
from vlagym.envs.nav.grid import ROBOT_RADIUS
from vlagym.envs.nav.objects import add_boxes, low_poly_mesh, quat_yaw
from vlagym.envs.sim import Camera, Simulation

STOP, FORWARD, LEFT, RIGHT = 0, 1, 2, 3
FORWARD_STEP = 0.25
TURN_STEP = float(np.radians(15.0))
MAX_LINEAR = 1.0
MAX_ANGULAR = 2.0
ACTION_MODES = ("discrete", "continuous")
# The camera sits inside the base's radius, so it never pokes through a wall the base touches.
CAMERA_HEIGHT = 0.6
CAMERA_FORWARD = 0.1
CAMERA_TILT = float(np.radians(10.0))  # downwards, so objects right in front stay in view


def wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class DiffDriveRobot(Robot):
    """A round base with a sensor head; see the module docstring for actions and proprioception.

    Args:
        action_mode: ``"discrete"`` or ``"continuous"``.
        image_size: camera (height, width).
        hfov: horizontal field of view of the camera, degrees.
    """

    # Scenes span at most ~20 m; discrete steps move 2.5 m/s and turn 2.6 rad/s at most.
    proprio_space = spaces.Box(np.array([-50, -50, -1, -1, -5, -5], np.float32),
                               np.array([50, 50, 1, 1, 5, 5], np.float32), dtype=np.float32)

    def __init__(
        self, action_mode: str = "discrete", image_size: tuple[int, int] = (128, 128), hfov: float = 90.0
    ) -> None:
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if not 10.0 <= hfov <= 170.0:
            raise ValueError(f"hfov must be in [10, 170] degrees, got {hfov}")
        self.action_mode = action_mode
        self.discrete = action_mode == "discrete"
        self.action_space = spaces.Discrete(4) if self.discrete else spaces.Box(-1.0, 1.0, (2,), np.float32)
        h, w = image_size
        vfov = float(np.degrees(2 * np.arctan(np.tan(np.radians(hfov) / 2) * h / w)))
        self.camera = Camera(
            eye=(0, 0, CAMERA_HEIGHT),
            target=(1, 0, CAMERA_HEIGHT),
            fov=vfov,
            width=w,
            height=h,
            near=0.04,
            far=25.0,
        )
        self.scene = None  # set by the env before ``load``
        self.sim: Simulation | None = None
        self.xy = np.zeros(2)
        self.yaw = 0.0

    # --- Robot API ------------------------------------------------------------------------------------------
    def load(self, sim: Simulation, rng: np.random.Generator) -> None:
        self.sim = sim
        self.dt = 1.0 / sim.control_hz
        self.xy = self.scene.sample_start(rng)
        self.yaw = float(rng.uniform(-np.pi, np.pi))
        self.start_xy = self.xy.copy()
        self.linear_velocity = self.angular_velocity = 0.0
        self.path_length = 0.0
        self.collided = False
        c = sim.client
        verts, idx, norms = low_poly_mesh("cylinder", ROBOT_RADIUS, 0.3)
        vis = c.createVisualShape(
            pb.GEOM_MESH, vertices=verts, indices=idx, normals=norms, rgbaColor=[0.25, 0.25, 0.28, 1]
        )
        self.body = sim.add("robot", c.createMultiBody(0, -1, vis, basePosition=[*self.xy, 0.0]))
        self.head = add_boxes(
            sim, "robot_head", [((-0.02, 0.0, 0.5), (0.08, 0.1, 0.07))], [0.85, 0.85, 0.88, 1]
        )[0]
        self._sync()

    def apply_action(self, action) -> None:
        if self.discrete:
            a = int(action)
            dist = FORWARD_STEP if a == FORWARD else 0.0
            dyaw = TURN_STEP if a == LEFT else -TURN_STEP if a == RIGHT else 0.0
        else:
            dist = float(action[0]) * MAX_LINEAR * self.dt
            dyaw = float(action[1]) * MAX_ANGULAR * self.dt
        heading = self.yaw + dyaw / 2
        direction = np.array([np.cos(heading), np.sin(heading)])
        if dist != 0.0:
            new_xy, self.collided = self.scene.move(self.xy, dist * direction)
        else:
            new_xy, self.collided = self.xy, False
        moved = new_xy - self.xy
        self.linear_velocity = float(moved @ direction) / self.dt
        self.angular_velocity = dyaw / self.dt
        self.path_length += float(np.linalg.norm(moved))
        self.xy = np.asarray(new_xy, dtype=np.float64)
        self.yaw = wrap(self.yaw + dyaw)
        self._sync()

    def proprio(self) -> np.ndarray:
        return np.array(
            [*self.xy, np.sin(self.yaw), np.cos(self.yaw), self.linear_velocity, self.angular_velocity],
            dtype=np.float32,
        )

    def label_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """The base on the floor: x forward, y left, z up."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([*self.xy, 0.0]), np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def cameras(self) -> dict[str, Camera]:
        fwd = np.array([np.cos(self.yaw), np.sin(self.yaw)])
        eye = np.array([*(self.xy + CAMERA_FORWARD * fwd), CAMERA_HEIGHT])
        look = np.array([*(np.cos(CAMERA_TILT) * fwd), -np.sin(CAMERA_TILT)])
        self.camera.look(eye, eye + look)
        return {"rgb": self.camera}

    # --- internals ------------------------------------------------------------------------------------------
    def _sync(self) -> None:
        c = self.sim.client
        orn = quat_yaw(self.yaw)
        c.resetBasePositionAndOrientation(self.body, [*self.xy, 0.0], orn)
        c.resetBasePositionAndOrientation(self.head, [*self.xy, 0.0], orn)
