"""Landmarks and furniture of the navigation scenes: their words, footprints and low-poly bodies.

Everything is built from boxes and few-segment meshes (a 12-sided cone and cylinder, PyBullet's
sphere), with visual shapes only: collisions are decided on the occupancy grid (``grid.py``),
so the bodies exist for the camera alone and TinyRenderer stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pybullet as pb

from vlagym.envs.nav.grid import Circle, Footprint, Rect
from vlagym.envs.sim import Simulation

# Saturated landmark and door colours; floors, walls and furniture use muted ones, so these stand out.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.1, 0.1),
    "green": (0.1, 0.68, 0.2),
    "blue": (0.1, 0.3, 0.92),
    "yellow": (0.96, 0.84, 0.08),
    "purple": (0.56, 0.18, 0.78),
    "orange": (1.0, 0.5, 0.02),
    "cyan": (0.05, 0.82, 0.86),
}

# shape -> (footprint half extents or radius, height); sized to be a few pixels wide across a room.
SHAPES: dict[str, tuple[tuple[float, float] | float, float]] = {
    "cube": ((0.17, 0.17), 0.34),
    "ball": (0.18, 0.36),
    "cone": (0.2, 0.5),
    "cylinder": (0.16, 0.5),
    "box": ((0.3, 0.17), 0.24),
}

FURNITURE_KINDS = ("table", "shelf", "cabinet", "sofa")
_FURNITURE_COLORS = {
    "table": [(0.55, 0.38, 0.24), (0.7, 0.55, 0.38), (0.38, 0.27, 0.2), (0.8, 0.78, 0.74)],
    "shelf": [(0.45, 0.32, 0.22), (0.62, 0.5, 0.36), (0.3, 0.3, 0.32), (0.86, 0.84, 0.8)],
    "cabinet": [(0.5, 0.42, 0.34), (0.68, 0.66, 0.62), (0.35, 0.3, 0.28), (0.56, 0.5, 0.44)],
    "sofa": [(0.42, 0.44, 0.5), (0.5, 0.36, 0.3), (0.36, 0.4, 0.36), (0.58, 0.54, 0.5)],
}
SEGMENTS = 12


def quat_yaw(yaw: float) -> list[float]:
    return [0.0, 0.0, float(np.sin(yaw / 2)), float(np.cos(yaw / 2))]


@dataclass
class Landmark:
    """A coloured object on the floor; a goal or a distractor."""

    color: str
    shape: str
    xy: tuple[float, float] = (0.0, 0.0)
    yaw: float = 0.0
    room: int = -1

    def __post_init__(self) -> None:
        if self.color not in COLORS or self.shape not in SHAPES:
            raise ValueError(
                f"unknown landmark {self.color!r} {self.shape!r}; colors {list(COLORS)}, "
                f"shapes {list(SHAPES)}"
            )

    def words(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def key(self) -> tuple[str, str]:
        return self.color, self.shape

    @property
    def radius(self) -> float:
        """Radius of the smallest circle around the footprint (for spacing objects apart)."""
        size = SHAPES[self.shape][0]
        return float(np.hypot(*size)) if isinstance(size, tuple) else float(size)

    @property
    def height(self) -> float:
        return SHAPES[self.shape][1]

    def footprint(self) -> Footprint:
        size = SHAPES[self.shape][0]
        if isinstance(size, tuple):
            return Rect(tuple(self.xy), size, self.yaw)
        return Circle(tuple(self.xy), size)


@dataclass
class Furniture:
    """A furniture piece made of boxes; local x runs along its width, local +y points away from its back."""

    kind: str
    xy: tuple[float, float]
    yaw: float
    width: float
    depth: float
    color: tuple[float, float, float]
    room: int = -1
    parts: list[tuple[tuple[float, float, float], tuple[float, float, float]]] = field(default_factory=list)

    def footprint(self) -> Rect:
        return Rect(tuple(self.xy), (self.width / 2, self.depth / 2), self.yaw)

    def words(self) -> str:
        return self.kind


def sample_furniture(rng: np.random.Generator, kind: str) -> Furniture:
    """A furniture piece of random size and colour at the origin; parts are (centre, half extents)."""
    palette = _FURNITURE_COLORS[kind]
    color = tuple(np.clip(np.array(palette[rng.integers(len(palette))]) + rng.uniform(-0.04, 0.04, 3), 0, 1))
    if kind == "table":
        w, d, h = rng.uniform(1.0, 1.4), rng.uniform(0.6, 0.8), 0.72
        parts = [((0, 0, h - 0.02), (w / 2, d / 2, 0.02))]
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(
                    ((sx * (w / 2 - 0.06), sy * (d / 2 - 0.06), (h - 0.04) / 2), (0.03, 0.03, (h - 0.04) / 2))
                )
    elif kind == "shelf":
        w, d, h = rng.uniform(0.8, 1.2), 0.36, rng.uniform(1.4, 1.8)
        parts = [
            ((-w / 2 + 0.02, 0, h / 2), (0.02, d / 2, h / 2)),
            ((w / 2 - 0.02, 0, h / 2), (0.02, d / 2, h / 2)),
            ((0, -d / 2 + 0.01, h / 2), (w / 2, 0.01, h / 2)),
        ]
        for z in np.linspace(0.06, h - 0.02, 4):
            parts.append(((0, 0, float(z)), (w / 2, d / 2, 0.018)))
    elif kind == "cabinet":
        w, d, h = rng.uniform(0.8, 1.2), 0.5, rng.uniform(0.8, 1.0)
        parts = [
            ((0, 0, h / 2 - 0.02), (w / 2 - 0.02, d / 2 - 0.02, h / 2 - 0.02)),
            ((0, 0, h - 0.02), (w / 2, d / 2, 0.02)),
        ]
    elif kind == "sofa":
        w, d = rng.uniform(1.5, 2.0), 0.85
        parts = [
            ((0, 0.05, 0.2), (w / 2 - 0.12, d / 2 - 0.05, 0.2)),
            ((0, -d / 2 + 0.1, 0.42), (w / 2, 0.1, 0.42)),
            ((-w / 2 + 0.1, 0.05, 0.3), (0.1, d / 2 - 0.05, 0.3)),
            ((w / 2 - 0.1, 0.05, 0.3), (0.1, d / 2 - 0.05, 0.3)),
        ]
    else:
        raise ValueError(f"unknown furniture kind {kind!r}; kinds {FURNITURE_KINDS}")
    return Furniture(
        kind,
        (0.0, 0.0),
        0.0,
        float(w),
        float(d),
        color,
        parts=[(tuple(map(float, c)), tuple(map(float, e))) for c, e in parts],
    )


# --- bodies -------------------------------------------------------------------------------------------------
def add_boxes(
    sim: Simulation, name: str, boxes, rgba, position=(0.0, 0.0, 0.0), yaw: float = 0.0
) -> list[int]:
    """One visual-only body per 16 boxes (PyBullet's shape-array limit); boxes are (centre, half extents)."""
    c = sim.client
    ids = []
    boxes = list(boxes)
    for k in range(0, len(boxes), 16):
        chunk = boxes[k : k + 16]
        vis = c.createVisualShapeArray(
            shapeTypes=[pb.GEOM_BOX] * len(chunk),
            halfExtents=[list(e) for _, e in chunk],
            visualFramePositions=[list(p) for p, _ in chunk],
        )
        body = c.createMultiBody(0, -1, vis, basePosition=list(position), baseOrientation=quat_yaw(yaw))
        c.changeVisualShape(body, -1, rgbaColor=list(rgba))
        ids.append(sim.add(name if k == 0 else f"{name}_{k // 16}", body))
    return ids


@cache
def low_poly_mesh(shape: str, radius: float, height: float) -> tuple[list, list, list]:
    """Flat-shaded low-poly cone or cylinder (base on z = 0): vertices, indices, normals."""
    ang = 2 * np.pi * np.arange(SEGMENTS + 1) / SEGMENTS
    ring = np.stack([np.cos(ang), np.sin(ang)], axis=1) * radius
    tris: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for k in range(SEGMENTS):
        a, b = ring[k], ring[k + 1]
        a0, b0 = np.array([*a, 0.0]), np.array([*b, 0.0])
        if shape == "cone":
            tris.append((a0, b0, np.array([0.0, 0.0, height])))
        else:
            a1, b1 = np.array([*a, height]), np.array([*b, height])
            tris += [(a0, b0, b1), (a0, b1, a1), (np.array([0.0, 0.0, height]), a1, b1)]
        tris.append((np.zeros(3), b0, a0))  # base
    verts, norms = [], []
    for tri in tris:
        n = np.cross(tri[1] - tri[0], tri[2] - tri[0])
        n = n / np.linalg.norm(n)
        for v in tri:
            verts.append([float(x) for x in v])
            norms.append([float(x) for x in n])
    return verts, list(range(len(verts))), norms


def spawn_landmark(sim: Simulation, name: str, lm: Landmark) -> int:
    c = sim.client
    rgba = [*COLORS[lm.color], 1.0]
    size, height = SHAPES[lm.shape]
    if lm.shape in ("cube", "box"):
        vis = c.createVisualShape(pb.GEOM_BOX, halfExtents=[size[0], size[1], height / 2], rgbaColor=rgba)
        z = height / 2
    elif lm.shape == "ball":
        vis = c.createVisualShape(pb.GEOM_SPHERE, radius=size, rgbaColor=rgba)
        z = size
    else:
        verts, idx, norms = low_poly_mesh(lm.shape, float(size), float(height))
        vis = c.createVisualShape(pb.GEOM_MESH, vertices=verts, indices=idx, normals=norms, rgbaColor=rgba)
        z = 0.0
    body = c.createMultiBody(
        0, -1, vis, basePosition=[lm.xy[0], lm.xy[1], z], baseOrientation=quat_yaw(lm.yaw)
    )
    return sim.add(name, body)


def spawn_furniture(sim: Simulation, name: str, f: Furniture) -> None:
    add_boxes(sim, name, f.parts, [*f.color, 1.0], position=(f.xy[0], f.xy[1], 0.0), yaw=f.yaw)
