"""Procedural tabletop objects: cubes, cylinders and bowls in named colours and two sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as pb

from vlagym.envs.sim import Simulation

COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.12, 0.12, 1.0),
    "green": (0.15, 0.7, 0.2, 1.0),
    "blue": (0.15, 0.3, 0.9, 1.0),
    "yellow": (0.95, 0.85, 0.1, 1.0),
    "purple": (0.55, 0.2, 0.75, 1.0),
    "orange": (1.0, 0.5, 0.05, 1.0),
    "cyan": (0.1, 0.8, 0.85, 1.0),
    "pink": (1.0, 0.45, 0.7, 1.0),
}
SHAPES = ("cube", "cylinder", "bowl")
SIZES = ("small", "large")
GRASPABLE = ("cube", "cylinder")

# Half-size (cube half-edge, cylinder radius, bowl inner radius) per shape and size, metres.
HALF = {
    ("cube", "small"): 0.02, ("cube", "large"): 0.025,
    ("cylinder", "small"): 0.02, ("cylinder", "large"): 0.025,
    ("bowl", "small"): 0.07, ("bowl", "large"): 0.085,
}
CYLINDER_HEIGHT = {"small": 0.045, "large": 0.055}
BOWL_WALL_HEIGHT = 0.04
BOWL_WALL = 0.006
BOWL_SIDES = 10
OBJECT_MASS = 0.08


@dataclass(frozen=True)
class ObjectSpec:
    """What an object is; where it is lives in the simulator."""

    shape: str
    color: str
    size: str = "small"

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; choose from {SHAPES}")
        if self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r}; choose from {tuple(COLORS)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose from {SIZES}")

    @property
    def half(self) -> float:
        return HALF[(self.shape, self.size)]

    @property
    def height(self) -> float:
        """Height of the object standing on the table."""
        if self.shape == "cube":
            return 2 * self.half
        if self.shape == "cylinder":
            return CYLINDER_HEIGHT[self.size]
        return BOWL_WALL_HEIGHT

    @property
    def footprint(self) -> float:
        """Radius of the circle the object covers on the table."""
        if self.shape == "cube":
            return self.half * np.sqrt(2)
        if self.shape == "bowl":
            return self.half + BOWL_WALL
        return self.half

    def words(self, with_size: bool = False) -> str:
        return f"{self.size} {self.color} {self.shape}" if with_size else f"{self.color} {self.shape}"


def spawn(sim: Simulation, name: str, spec: ObjectSpec, xy, yaw: float) -> int:
    """Create the object standing on the table (z = 0) at ``xy`` with heading ``yaw``."""
    orn = pb.getQuaternionFromEuler([0, 0, yaw])
    rgba = COLORS[spec.color]
    if spec.shape == "cube":
        h = spec.half
        return sim.create_primitive(name, pb.GEOM_BOX, rgba, (xy[0], xy[1], h), orn, mass=OBJECT_MASS,
                                    halfExtents=[h, h, h])
    if spec.shape == "cylinder":
        height = spec.height
        return sim.create_primitive(name, pb.GEOM_CYLINDER, rgba, (xy[0], xy[1], height / 2), orn,
                                    mass=OBJECT_MASS, radius=spec.half, height=height)
    return _spawn_bowl(sim, name, spec, xy, orn, rgba)


def _spawn_bowl(sim: Simulation, name: str, spec: ObjectSpec, xy, orn, rgba) -> int:
    """An open container: a flat floor ringed by thin wall slabs (a low-poly bowl)."""
    r = spec.half
    floor = 0.004
    parts = [dict(type=pb.GEOM_CYLINDER, radius=r + BOWL_WALL, length=2 * floor, pos=(0, 0, floor))]
    side = 2 * (r + BOWL_WALL) * np.tan(np.pi / BOWL_SIDES) + 0.002
    for k in range(BOWL_SIDES):
        a = 2 * np.pi * k / BOWL_SIDES
        centre = (r + BOWL_WALL / 2) * np.array([np.cos(a), np.sin(a)])
        # Walls stand on the floor, not on the table: only the floor touches the table, which
        # keeps the bowl's contact count (its physics cost) low.
        wall = BOWL_WALL_HEIGHT - 2 * floor
        parts.append(dict(type=pb.GEOM_BOX, halfExtents=(BOWL_WALL / 2, side / 2, wall / 2),
                          pos=(centre[0], centre[1], 2 * floor + wall / 2),
                          orn=pb.getQuaternionFromEuler([0, 0, a])))
    c = sim.client
    arrays = dict(
        shapeTypes=[p["type"] for p in parts],
        radii=[p.get("radius", 0.0) for p in parts],
        halfExtents=[p.get("halfExtents", (0, 0, 0)) for p in parts],
        lengths=[p.get("length", 0.0) for p in parts],
    )
    frames_pos = [p["pos"] for p in parts]
    frames_orn = [p.get("orn", (0, 0, 0, 1)) for p in parts]
    col = c.createCollisionShapeArray(**arrays, collisionFramePositions=frames_pos,
                                      collisionFrameOrientations=frames_orn)
    vis = c.createVisualShapeArray(**arrays, visualFramePositions=frames_pos,
                                   visualFrameOrientations=frames_orn, rgbaColors=[list(rgba)] * len(parts))
    body = c.createMultiBody(0.3, col, vis, basePosition=[xy[0], xy[1], 0.0], baseOrientation=list(orn))
    c.changeDynamics(body, -1, lateralFriction=1.0, activationState=c.ACTIVATION_STATE_ENABLE_SLEEPING)
    return sim.add(name, body)


def place_without_overlap(
    rng: np.random.Generator,
    specs: list[ObjectSpec],
    region: np.ndarray,
    margin: float = 0.02,
    tries: int = 200,
    restarts: int = 20,
) -> list[tuple[np.ndarray, float]]:
    """Sample ``(xy, yaw)`` for each spec inside ``region`` ((2, 2): low, high) with no overlap.

    Larger objects are placed first; the result is in the order of ``specs``. When the early
    objects leave no room for a later one (two large bowls do about one time in five), the
    whole layout is drawn again.
    """
    order = sorted(range(len(specs)), key=lambda i: -specs[i].footprint)
    for _ in range(restarts):
        placed: dict[int, tuple[np.ndarray, float]] = {}
        for i in order:
            r = specs[i].footprint
            for _ in range(tries):
                xy = rng.uniform(region[0] + r, region[1] - r)
                if all(np.linalg.norm(xy - placed[j][0]) > r + specs[j].footprint + margin for j in placed):
                    placed[i] = (xy, float(rng.uniform(-np.pi, np.pi)))
                    break
            else:
                break
        else:
            return [placed[i] for i in range(len(specs))]
    raise RuntimeError(f"could not place {len(specs)} objects without overlap; reduce distractors")
