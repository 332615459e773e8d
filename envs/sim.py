"""One PyBullet client per environment, bodies addressed by name, and the camera.

Nothing here touches PyBullet's global connection: every call goes through the
client this object owns, so many environments live side by side in one process.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field

import numpy as np
import pybullet as pb
from pybullet_utils.bullet_client import BulletClient

PHYSICS_HZ = 240
SOLVER_ITERATIONS = 20


@contextlib.contextmanager
def _quiet_stdout():
    """Silence PyBullet's C-level prints (``argv[0]=``, URDF warnings) while connecting."""
    try:
        fd = os.dup(1)
    except OSError:  # no real stdout (some test runners): nothing to silence
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(fd, 1)
            os.close(fd)


@dataclass
class Lighting:
    """Scene lighting as TinyRenderer understands it.

    Attributes:
        direction: direction *towards* the light, world frame (normalised on use).
        color: RGB of the light, each in [0, 1].
        ambient: ambient coefficient.
        diffuse: diffuse coefficient; together with ``ambient`` this is the intensity.
        specular: specular coefficient.
        shadows: whether to render shadows (a second pass; about 1.6x slower).
    """

    direction: tuple[float, float, float] = (0.4, -0.3, 1.0)
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.6
    diffuse: float = 0.45
    specular: float = 0.05
    shadows: bool = False

    def __post_init__(self) -> None:
        if len(self.direction) != 3 or not np.any(np.asarray(self.direction, dtype=float)):
            raise ValueError(f"Lighting.direction must be a non-zero 3-vector, got {self.direction!r}")
        if len(self.color) != 3 or not all(0.0 <= c <= 1.0 for c in self.color):
            raise ValueError(f"Lighting.color must be three values in [0, 1], got {self.color!r}")


@dataclass
class Camera:
    """A pinhole camera looking from ``eye`` at ``target``; matrices are cached."""

    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    fov: float = 50.0
    width: int = 128
    height: int = 128
    near: float = 0.02
    far: float = 5.0
    _view: list[float] = field(init=False, repr=False)
    _proj: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"camera images must be at least 8x8 pixels, got {self.width}x{self.height}")
        self._view = list(pb.computeViewMatrix(self.eye, self.target, self.up))
        self._proj = list(pb.computeProjectionMatrixFOV(self.fov, self.width / self.height, self.near, self.far))

    def look(self, eye, target, up=(0.0, 0.0, 1.0)) -> None:
        """Move the camera (for cameras that ride on the robot)."""
        self.eye, self.target, self.up = tuple(eye), tuple(target), tuple(up)
        self._view = list(pb.computeViewMatrix(self.eye, self.target, self.up))


def _shape_kwargs(shape: int, geometry: dict) -> tuple[dict, dict]:
    """``createCollisionShape`` and ``createVisualShape`` keywords of one primitive (they spell a cylinder's
    length differently)."""
    col_kw = dict(geometry)
    vis_kw = dict(geometry)
    if shape == pb.GEOM_CYLINDER:
        vis_kw["length"] = col_kw.pop("height", col_kw.get("length"))
        col_kw["height"] = vis_kw["length"]
        vis_kw.pop("height", None)
        col_kw.pop("length", None)
    return col_kw, vis_kw


class _Client(BulletClient):
    """``BulletClient`` that keeps the bound PyBullet functions it hands out.

    ``BulletClient.__getattr__`` builds a fresh ``functools.partial`` on every attribute lookup (with an
    ``inspect`` call); an env step makes about fifty, which cost 5% of the step. The first lookup of a name
    now stores the partial on the instance, where later lookups find it without ``__getattr__``.
    """

    def __getattr__(self, name: str):
        attribute = super().__getattr__(name)
        if isinstance(attribute, functools.partial) and name != "disconnect":
            self.__dict__[name] = attribute
        return attribute


class Simulation:
    """A PyBullet client in DIRECT mode with named bodies.

    ``reset()`` wipes the world (``resetSimulation``) so that an episode's physics
    depends on its seed only, never on what earlier episodes left behind.
    """

    def __init__(self, control_hz: int = 10) -> None:
        if PHYSICS_HZ % control_hz:
            raise ValueError(f"control_hz must divide {PHYSICS_HZ}, got {control_hz}")
        with _quiet_stdout():
            self.client = _Client(connection_mode=pb.DIRECT)
        self.control_hz = control_hz
        self.substeps = PHYSICS_HZ // control_hz
        self.bodies: dict[str, int] = {}
        self._closed = False

    @property
    def id(self) -> int:
        return self.client._client

    def reset(self) -> None:
        c = self.client
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(1.0 / PHYSICS_HZ)
        # 20 solver iterations hold grasps as well as the default 50 at 240 Hz, at half the cost.
        c.setPhysicsEngineParameter(numSolverIterations=SOLVER_ITERATIONS, deterministicOverlappingPairs=1)
        self.bodies.clear()

    def step(self) -> None:
        """Advance one control period (``substeps`` physics steps at 240 Hz)."""
        step = self.client.stepSimulation
        for _ in range(self.substeps):
            step()

    # --- bodies -------------------------------------------------------------------------------------------
    def add(self, name: str, body_id: int) -> int:
        if name in self.bodies:
            raise ValueError(f"a body named {name!r} already exists")
        self.bodies[name] = body_id
        return body_id

    def create_primitive(
        self,
        name: str,
        shape: int,
        rgba,
        position,
        orientation=(0.0, 0.0, 0.0, 1.0),
        mass: float = 0.0,
        friction: float = 1.0,
        visual: bool = True,
        **geometry,
    ) -> int:
        """Create a body from one PyBullet primitive (``GEOM_BOX`` with halfExtents, ...).

        ``visual=False`` makes it collision-only (``rgba`` unused): a static surface whose looks are added
        later by ``create_visual``, so that it is drawn after the bodies in front of it.
        """
        c = self.client
        col_kw, vis_kw = _shape_kwargs(shape, geometry)
        col = c.createCollisionShape(shape, **col_kw)
        vis = c.createVisualShape(shape, rgbaColor=list(rgba), **vis_kw) if visual else -1
        body = c.createMultiBody(mass, col, vis, basePosition=list(position), baseOrientation=list(orientation))
        if not visual:  # PyBullet draws a body without visuals by its collision shape, unless it is transparent
            c.changeVisualShape(body, -1, rgbaColor=[1.0, 1.0, 1.0, 0.0])
        c.changeDynamics(body, -1, lateralFriction=friction, spinningFriction=0.001, rollingFriction=0.0001)
        if mass > 0:
            # Resting objects sleep (cost nothing) until something touches them.
            c.changeDynamics(body, -1, activationState=c.ACTIVATION_STATE_ENABLE_SLEEPING)
        return self.add(name, body)

    def create_visual(self, name: str, shape: int, rgba, position, orientation=(0.0, 0.0, 0.0, 1.0),
                      **geometry) -> int:
        """A visual-only body (no collision shape: the physics never sees it) from one primitive.

        TinyRenderer draws bodies in the order they were created and shades a pixel only when it is nearer
        than what the pixel already holds, so a large surface created after the bodies in front of it (the
        table after the robot and the objects) costs only its visible pixels; the image is the same.
        """
        _, vis_kw = _shape_kwargs(shape, geometry)
        c = self.client
        vis = c.createVisualShape(shape, rgbaColor=list(rgba), **vis_kw)
        body = c.createMultiBody(0.0, -1, vis, basePosition=list(position), baseOrientation=list(orientation))
        return self.add(name, body)

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        pos, orn = self.client.getBasePositionAndOrientation(self.bodies[name])
        return np.asarray(pos), np.asarray(orn)

    def position(self, name: str) -> np.ndarray:
        return self.pose(name)[0]

    def yaw(self, name: str) -> float:
        return float(self.client.getEulerFromQuaternion(self.pose(name)[1])[2])

    def in_contact(self, a: str, b: str, link_a: int | None = None) -> bool:
        kw = {} if link_a is None else {"linkIndexA": link_a}
        return len(self.client.getContactPoints(self.bodies[a], self.bodies[b], **kw)) > 0

    # --- rendering ----------------------------------------------------------------------------------------
    def render(self, camera: Camera, lighting: Lighting, segmentation: bool = False):
        """Render one image with TinyRenderer; returns uint8 (H, W, 3) and optionally the seg mask.

        The shadow flag is always passed: PyBullet otherwise keeps the previous call's setting.
        """
        flags = 0 if segmentation else pb.ER_NO_SEGMENTATION_MASK
        direction = np.asarray(lighting.direction, dtype=float)
        direction = direction / np.linalg.norm(direction)
        _, _, rgba, _, seg = self.client.getCameraImage(
            camera.width,
            camera.height,
            camera._view,
            camera._proj,
            lightDirection=direction.tolist(),
            lightColor=list(lighting.color),
            lightAmbientCoeff=lighting.ambient,
            lightDiffuseCoeff=lighting.diffuse,
            lightSpecularCoeff=lighting.specular,
            shadow=int(lighting.shadows),
            renderer=pb.ER_TINY_RENDERER,
            flags=flags,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(camera.height, camera.width, 4)[..., :3].copy()
        if segmentation:
            return rgb, np.asarray(seg, dtype=np.int32).reshape(camera.height, camera.width)
        return rgb

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.client.disconnect()
            except pb.error:
                pass

    def __del__(self) -> None:  # a dropped env must not leak its physics server
        try:
            self.close()
        except Exception:
            pass
