"""Procedural indoor scenes: one to four connected rooms with doorways, furniture, colours and light.

``Scene.generate(rng)`` draws a layout as pure data from the env's generator; ``build(sim)`` adds
the bodies; the task then places landmarks with ``set_landmarks``, which refreshes the occupancy
grid, the free space and the planner. Rooms are cells of a small grid (1x1, 1x2, 1x3, an L, 2x2)
with random column widths and row heights; neighbouring rooms are joined by doorways along a
random spanning tree (plus, sometimes, an extra loop). Each room has a coloured closed door on
an outside wall, which names the room in instructions ("the room with the yellow door").
Walls are merged into as few boxes as the doorways allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vlagym.envs.nav.grid import ROBOT_RADIUS, Grid, Planner, Rect, clearance, largest_component
from vlagym.envs.nav.objects import (
    COLORS,
    FURNITURE_KINDS,
    Furniture,
    Landmark,
    add_boxes,
    sample_furniture,
    spawn_furniture,
    spawn_landmark,
)
from vlagym.envs.sim import Lighting, Simulation

WALL_T = 0.1  # wall thickness
WALL_H = 2.2
ROOM_SIZE = (3.0, 5.0)  # range of room widths and depths, metres
DOOR_WIDTH = (0.9, 1.2)  # clear width of a doorway
PANEL_W, PANEL_H, PANEL_T = 0.9, 1.9, 0.05  # the closed coloured door of each room
DOORWAY_KEEPOUT = 1.0  # furniture and landmarks stay this far from doorway centres

# Cells (column, row) of each layout before a random transpose and mirror.
LAYOUTS = {
    1: [[(0, 0)]],
    2: [[(0, 0), (1, 0)]],
    3: [[(0, 0), (1, 0), (2, 0)], [(0, 0), (1, 0), (0, 1)]],
    4: [[(0, 0), (1, 0), (0, 1), (1, 1)]],
}
_FLOORS = [
    (0.55, 0.45, 0.35),
    (0.45, 0.42, 0.4),
    (0.62, 0.58, 0.52),
    (0.36, 0.34, 0.33),
    (0.5, 0.37, 0.27),
    (0.58, 0.58, 0.56),
    (0.42, 0.47, 0.45),
    (0.66, 0.53, 0.41),
    (0.47, 0.44, 0.52),
]
_WALLS = [
    (0.86, 0.83, 0.76),
    (0.78, 0.8, 0.83),
    (0.9, 0.88, 0.84),
    (0.75, 0.73, 0.67),
    (0.83, 0.77, 0.71),
    (0.71, 0.77, 0.75),
]
_CEILING = (0.92, 0.92, 0.9)
_OUTSIDE_RGB = (28, 28, 30)
_WALL_RGB = (70, 70, 74)


def _jitter(rng: np.random.Generator, rgb, amount: float = 0.04) -> tuple[float, float, float]:
    return tuple(float(x) for x in np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0.0, 1.0))


@dataclass
class Room:
    index: int
    rect: tuple[float, float, float, float]  # x0, y0, x1, y1 on the wall centre lines
    floor: tuple[float, float, float]
    door_color: str = ""
    door: Rect | None = None  # footprint of the closed coloured door panel

    @property
    def center(self) -> np.ndarray:
        x0, y0, x1, y1 = self.rect
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2])


@dataclass
class Doorway:
    center: tuple[float, float]
    width: float
    vertical: bool  # the wall it pierces runs along y (x = const)
    rooms: tuple[int, int]


@dataclass
class Scene:
    rooms: list[Room]
    doorways: list[Doorway]
    walls: list[Rect]
    furniture: list[Furniture]
    wall_color: tuple[float, float, float]
    lighting: Lighting
    landmarks: list[Landmark] = field(default_factory=list)

    def __post_init__(self) -> None:
        x0 = min(r.rect[0] for r in self.rooms)
        y0 = min(r.rect[1] for r in self.rooms)
        x1 = max(r.rect[2] for r in self.rooms)
        y1 = max(r.rect[3] for r in self.rooms)
        self.bounds = (x0, y0, x1, y1)
        self.grid = Grid((x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5))
        g = self.grid
        self.room_id = np.full(g.shape, -1, dtype=np.int8)
        blocked = np.ones(g.shape, dtype=bool)  # the outside is solid
        for room in self.rooms:
            x0, y0, x1, y1 = room.rect
            inside = Rect(((x0 + x1) / 2, (y0 + y1) / 2), ((x1 - x0) / 2, (y1 - y0) / 2))
            g.rasterize(blocked, inside, False)
            interior = Rect(inside.center, (inside.half[0] - WALL_T / 2, inside.half[1] - WALL_T / 2))
            g.rasterize(self.room_id, interior, room.index)
        for wall in self.walls:
            g.rasterize(blocked, wall)
        for room in self.rooms:
            g.rasterize(blocked, room.door)
        for f in self.furniture:
            g.rasterize(blocked, f.footprint())
        self.static_blocked = blocked
        self.static_clear = clearance(g, blocked)
        self.main_area = largest_component(self.static_clear >= ROBOT_RADIUS)
        self._spots: dict[float, np.ndarray] = {}
        self._keepout: np.ndarray | None = None
        self.set_landmarks([])

    # --- generation -----------------------------------------------------------------------------------------
    @classmethod
    def generate(cls, rng: np.random.Generator, num_rooms: tuple[int, int] = (1, 4)) -> Scene:
        n = int(rng.integers(num_rooms[0], num_rooms[1] + 1))
        variants = LAYOUTS[n]
        cells = np.array(variants[int(rng.integers(len(variants)))])
        if rng.random() < 0.5:
            cells = cells[:, ::-1]
        for axis in (0, 1):
            if rng.random() < 0.5:
                cells[:, axis] = cells[:, axis].max() - cells[:, axis]
        cells = sorted(map(tuple, cells.tolist()), key=lambda c: (c[1], c[0]))
        occupied = {c: k for k, c in enumerate(cells)}
        ncols, nrows = max(c[0] for c in cells) + 1, max(c[1] for c in cells) + 1
        xs = np.concatenate([[0.0], np.cumsum(rng.uniform(*ROOM_SIZE, ncols))])
        ys = np.concatenate([[0.0], np.cumsum(rng.uniform(*ROOM_SIZE, nrows))])

        floors = rng.permutation(len(_FLOORS))
        door_colors = rng.permutation(list(COLORS))
        rooms = [
            Room(
                k, (xs[i], ys[j], xs[i + 1], ys[j + 1]), _jitter(rng, _FLOORS[floors[k]]), str(door_colors[k])
            )
            for k, (i, j) in enumerate(cells)
        ]

        doorways = cls._doorways(rng, cells, occupied, xs, ys)
        walls = cls._walls(cells, occupied, doorways, xs, ys)
        for room in rooms:
            cls._place_door_panel(rng, room, cells[room.index], occupied)
        furniture = cls._furniture(rng, rooms, doorways)
        return cls(
            rooms,
            doorways,
            walls,
            furniture,
            _jitter(rng, _WALLS[int(rng.integers(len(_WALLS)))], 0.03),
            cls._lighting(rng),
        )

    @staticmethod
    def _doorways(rng, cells, occupied, xs, ys) -> list[Doorway]:
        edges = [
            (occupied[c], occupied[(c[0] + dx, c[1] + dy)])
            for c in cells
            for dx, dy in ((1, 0), (0, 1))
            if (c[0] + dx, c[1] + dy) in occupied
        ]
        parent = list(range(len(cells)))

        def root(k: int) -> int:
            while parent[k] != k:
                k = parent[k]
            return k

        doorways = []
        for e in rng.permutation(len(edges)) if edges else []:
            a, b = edges[int(e)]
            joins = root(a) != root(b)
            if joins:
                parent[root(a)] = root(b)
            if not joins and rng.random() >= 0.5:  # an extra loop through the rooms, half the time
                continue
            (ia, ja), (ib, jb) = cells[a], cells[b]
            w = float(rng.uniform(*DOOR_WIDTH))
            if ia != ib:  # side by side: the shared wall is vertical
                lo, hi = ys[ja], ys[ja + 1]
                c = float(rng.uniform(lo + 0.6 + w / 2, hi - 0.6 - w / 2))
                doorways.append(Doorway((float(xs[max(ia, ib)]), c), w, True, (a, b)))
            else:
                lo, hi = xs[ia], xs[ia + 1]
                c = float(rng.uniform(lo + 0.6 + w / 2, hi - 0.6 - w / 2))
                doorways.append(Doorway((c, float(ys[max(ja, jb)])), w, False, (a, b)))
        return doorways

    @staticmethod
    def _walls(cells, occupied, doorways, xs, ys) -> list[Rect]:
        """Merge every wall line into runs between doorways: one box per run."""
        walls = []
        for vertical, lines, spans in ((True, xs, ys), (False, ys, xs)):
            for i, pos in enumerate(lines):
                covered = []
                for j in range(len(spans) - 1):
                    a = (i - 1, j) if vertical else (j, i - 1)
                    b = (i, j) if vertical else (j, i)
                    if a in occupied or b in occupied:
                        covered.append([spans[j], spans[j + 1]])
                gaps = sorted(
                    (d.center[1] if vertical else d.center[0], d.width)
                    for d in doorways
                    if d.vertical == vertical and abs((d.center[0] if vertical else d.center[1]) - pos) < 1e-9
                )
                runs: list[list[float]] = []
                for lo, hi in covered:
                    if runs and abs(runs[-1][1] - lo) < 1e-9:
                        runs[-1][1] = hi
                    else:
                        runs.append([lo, hi])
                pieces = []
                for lo, hi in runs:
                    for c, w in gaps:
                        if lo < c < hi:
                            pieces.append((lo, c - w / 2 - WALL_T / 2))
                            lo = c + w / 2 + WALL_T / 2
                    pieces.append((lo, hi))
                for lo, hi in pieces:  # each run reaches half a wall past its ends, closing the corners
                    mid, half = (lo + hi) / 2, (hi - lo) / 2 + WALL_T / 2
                    if vertical:
                        walls.append(Rect((float(pos), float(mid)), (WALL_T / 2, float(half))))
                    else:
                        walls.append(Rect((float(mid), float(pos)), (float(half), WALL_T / 2)))
        return walls

    @staticmethod
    def _place_door_panel(rng, room: Room, cell, occupied) -> None:
        x0, y0, x1, y1 = room.rect
        i, j = cell
        sides = [
            s
            for s, nb in (("W", (i - 1, j)), ("E", (i + 1, j)), ("S", (i, j - 1)), ("N", (i, j + 1)))
            if nb not in occupied
        ]
        side = sides[int(rng.integers(len(sides)))]
        off = WALL_T / 2 + PANEL_T / 2
        if side in ("W", "E"):
            y = float(rng.uniform(y0 + 0.5 + PANEL_W / 2, y1 - 0.5 - PANEL_W / 2))
            x = x0 + off if side == "W" else x1 - off
            room.door = Rect((float(x), y), (PANEL_T / 2, PANEL_W / 2))
        else:
            x = float(rng.uniform(x0 + 0.5 + PANEL_W / 2, x1 - 0.5 - PANEL_W / 2))
            y = y0 + off if side == "S" else y1 - off
            room.door = Rect((x, float(y)), (PANEL_W / 2, PANEL_T / 2))

    @staticmethod
    def _furniture(rng, rooms: list[Room], doorways: list[Doorway]) -> list[Furniture]:
        out: list[Furniture] = []
        for room in rooms:
            x0, y0, x1, y1 = room.rect
            for _ in range(int(rng.integers(1, 3))):
                f = sample_furniture(rng, FURNITURE_KINDS[int(rng.integers(len(FURNITURE_KINDS)))])
                for _ in range(20):
                    if f.kind == "table" and rng.random() < 0.5:  # a free-standing table
                        f.yaw = float(rng.choice([0.0, np.pi / 2]))
                        m = 1.0 + max(f.width, f.depth) / 2
                        if x1 - x0 <= 2 * m or y1 - y0 <= 2 * m:
                            continue
                        f.xy = (float(rng.uniform(x0 + m, x1 - m)), float(rng.uniform(y0 + m, y1 - m)))
                    else:  # back against a wall, facing into the room
                        side = int(rng.integers(4))
                        back = WALL_T / 2 + 0.03 + f.depth / 2
                        if side < 2:  # south / north walls
                            lo, hi = (
                                x0 + WALL_T / 2 + f.width / 2 + 0.05,
                                x1 - WALL_T / 2 - f.width / 2 - 0.05,
                            )
                            x = float(rng.uniform(lo, hi))
                            f.xy, f.yaw = ((x, y0 + back), 0.0) if side == 0 else ((x, y1 - back), np.pi)
                        else:  # west / east walls
                            lo, hi = (
                                y0 + WALL_T / 2 + f.width / 2 + 0.05,
                                y1 - WALL_T / 2 - f.width / 2 - 0.05,
                            )
                            y = float(rng.uniform(lo, hi))
                            f.xy, f.yaw = (
                                ((x0 + back, y), -np.pi / 2) if side == 2 else ((x1 - back, y), np.pi / 2)
                            )
                    if Scene._furniture_fits(f, room, doorways, out):
                        f.room = room.index
                        out.append(f)
                        break
        return out

    @staticmethod
    def _furniture_fits(f: Furniture, room: Room, doorways: list[Doorway], others: list[Furniture]) -> bool:
        fp = f.footprint()
        if any(fp.distance(np.array(d.center)) < DOORWAY_KEEPOUT for d in doorways):
            return False
        if fp.distance(np.array(room.door.center)) < PANEL_W / 2 + 0.4:
            return False
        bx = fp.bounds()
        for o in others:  # axis-aligned pieces: keep a gap the robot fits through
            ox = o.footprint().bounds()
            if max(ox[0] - bx[2], bx[0] - ox[2], ox[1] - bx[3], bx[1] - ox[3]) < 0.7:
                return False
        return True

    @staticmethod
    def _lighting(rng) -> Lighting:
        az, tilt = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(15), np.radians(60))
        return Lighting(
            direction=(
                float(np.sin(tilt) * np.cos(az)),
                float(np.sin(tilt) * np.sin(az)),
                float(np.cos(tilt)),
            ),
            color=tuple(float(c) for c in 1.0 - rng.uniform(0.0, 0.12, 3)),
            ambient=float(rng.uniform(0.5, 0.7)),
            diffuse=float(rng.uniform(0.3, 0.5)),
            specular=0.02,
        )

    # --- bodies ---------------------------------------------------------------------------------------------
    def build(self, sim: Simulation) -> None:
        for room in self.rooms:
            x0, y0, x1, y1 = room.rect
            add_boxes(
                sim,
                f"floor{room.index}",
                [(((x0 + x1) / 2, (y0 + y1) / 2, -0.01), ((x1 - x0) / 2, (y1 - y0) / 2, 0.01))],
                [*room.floor, 1.0],
            )
        x0, y0, x1, y1 = self.bounds
        add_boxes(
            sim,
            "ceiling",
            [
                (
                    ((x0 + x1) / 2, (y0 + y1) / 2, WALL_H + 0.01),
                    ((x1 - x0) / 2 + WALL_T, (y1 - y0) / 2 + WALL_T, 0.01),
                )
            ],
            [*_CEILING, 1.0],
        )
        add_boxes(
            sim,
            "walls",
            [((*w.center, WALL_H / 2), (*w.half, WALL_H / 2)) for w in self.walls],
            [*self.wall_color, 1.0],
        )
        for room in self.rooms:
            d = room.door
            knob_dir = np.sign(np.array(room.center) - d.center) * (np.array(d.half) < 0.1)  # into the room
            along = np.array(d.half) >= 0.1
            knob = np.array(d.center) + knob_dir * (PANEL_T / 2 + 0.03) + along * (PANEL_W / 2 - 0.12)
            add_boxes(
                sim,
                f"door{room.index}",
                [((*d.center, PANEL_H / 2), (*d.half, PANEL_H / 2))],
                [*COLORS[room.door_color], 1.0],
            )
            add_boxes(sim, f"knob{room.index}", [((*knob, 1.0), (0.03, 0.03, 0.03))], [0.2, 0.2, 0.2, 1.0])
        for k, f in enumerate(self.furniture):
            spawn_furniture(sim, f"furniture{k}", f)

    def spawn_landmarks(self, sim: Simulation) -> None:
        for k, lm in enumerate(self.landmarks):
            spawn_landmark(sim, f"landmark{k}", lm)

    # --- free space -----------------------------------------------------------------------------------------
    def set_landmarks(self, landmarks: list[Landmark]) -> None:
        """Place landmarks (data only) and refresh blocked cells, clearance, free space and the planner."""
        self.landmarks = list(landmarks)
        blocked = self.static_blocked.copy()
        for lm in self.landmarks:
            self.grid.rasterize(blocked, lm.footprint())
        self.blocked = blocked
        self.clear = clearance(self.grid, blocked) if self.landmarks else self.static_clear
        self.free = self.clear >= ROBOT_RADIUS
        self._planner: Planner | None = None

    @property
    def planner(self) -> Planner:
        if self._planner is None:
            self._planner = Planner(self.grid, self.free, self.clear)
        return self._planner

    def is_free(self, xy) -> bool:
        return bool(self.free[self.grid.cell(xy)])

    def region(self, lm: Landmark, dist: float) -> np.ndarray:
        """Flat indices of free cells whose centres lie within ``dist`` of the landmark's footprint."""
        return np.flatnonzero(self.grid.near(lm.footprint(), dist) & self.free)

    def room_of(self, xy) -> int:
        return int(self.room_id[self.grid.cell(xy)])

    def sample_start(self, rng: np.random.Generator) -> np.ndarray:
        """A start in the main free area, away from walls and doorways."""
        cand = np.flatnonzero(self.main_area & (self.static_clear >= 0.45) & (self.room_id >= 0))
        i = int(cand[rng.integers(len(cand))])
        return self.grid.centers.reshape(-1, 2)[i] + rng.uniform(-0.4, 0.4, 2) * self.grid.res

    def landmark_spots(self, radius: float) -> np.ndarray:
        """Boolean grid of centres where a landmark of this radius may stand (before other landmarks)."""
        if radius not in self._spots:
            if self._keepout is None:
                far = self.room_id >= 0
                for d in self.doorways:
                    far &= np.hypot(*(self.grid.centers - d.center).transpose(2, 0, 1)) >= DOORWAY_KEEPOUT
                for room in self.rooms:  # nothing parks in front of the coloured doors that name the rooms
                    far &= ~self.grid.near(room.door, 0.6)
                self._keepout = far
            self._spots[radius] = self._keepout & (self.static_clear >= radius + 0.15)
        return self._spots[radius]

    def move(self, xy: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, bool]:
        """Move a robot at ``xy`` by ``delta`` as far as the free space lets it, sliding along walls.

        Returns the new position and whether anything was in the way.
        """
        target = xy + delta
        if self.grid.segment_free(self.free, xy, target):
            return target, False
        best = self._furthest(xy, delta)
        for axis in (0, 1):  # slide: keep the component along each axis
            along = np.zeros(2)
            along[axis] = delta[axis]
            p = self._furthest(xy, along)
            if np.linalg.norm(p - xy) > np.linalg.norm(best - xy) + 1e-9:
                best = p
        return best, True

    def _furthest(self, xy: np.ndarray, delta: np.ndarray) -> np.ndarray:
        n = int(np.ceil(np.linalg.norm(delta) / (self.grid.res / 4)))
        if n == 0:
            return xy.copy()
        pts = xy + delta * (np.arange(1, n + 1) / n)[:, None]
        idx = np.floor((pts - self.grid.origin) / self.grid.res).astype(int)
        ok = self.free[
            np.clip(idx[:, 1], 0, self.grid.shape[0] - 1), np.clip(idx[:, 0], 0, self.grid.shape[1] - 1)
        ]
        blocked = np.flatnonzero(~ok)
        k = n if blocked.size == 0 else int(blocked[0])
        return xy.copy() if k == 0 else pts[k - 1].copy()

    # --- pictures -------------------------------------------------------------------------------------------
    def map_image(self) -> np.ndarray:
        """Top-down colours on the grid (uint8, ny x nx x 3): floors, walls, doors, furniture, landmarks."""
        g = self.grid
        img = np.empty((*g.shape, 3), dtype=np.uint8)
        img[:] = _OUTSIDE_RGB
        for room in self.rooms:
            img[self.room_id == room.index] = np.asarray(room.floor) * 255
        wall = np.zeros(g.shape, dtype=bool)
        for w in self.walls:
            g.rasterize(wall, w)
        img[wall] = _WALL_RGB
        for f in self.furniture:
            mask = g.near(f.footprint(), 0.0)
            img[mask] = np.asarray(f.color) * 200
        for room in self.rooms:
            img[g.near(room.door, 0.03)] = np.asarray(COLORS[room.door_color]) * 255
        for lm in self.landmarks:
            img[g.near(lm.footprint(), 0.02)] = np.asarray(COLORS[lm.color]) * 255
        return img
