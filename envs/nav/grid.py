"""Occupancy grid, 2-D footprints and the shortest-path planner of the navigation scenes.

The grid is the one source of truth for where the robot may stand: a cell is *free* when its
centre lies at least ``ROBOT_RADIUS`` from every obstacle (walls, furniture, landmarks, the
outside). The robot's collision check, the goal regions, the geodesic distances and the
expert's plans all read the same grid, so the expert never plans through a spot the robot
cannot enter, and "reachable" means the same thing everywhere.

Shortest paths are 8-connected Dijkstra searches (scipy) from a goal *region* outwards, so one
search answers "how far, and which way" for every cell at once. Searches chain: seeding a
region with the remaining cost of the next leg gives the best route through several subgoals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RES = 0.05  # metres per cell
ROBOT_RADIUS = 0.18
SQRT2 = float(np.sqrt(2.0))


# --- footprints ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rect:
    """An oriented rectangle on the floor: centre, half extents along its own axes, yaw."""

    center: tuple[float, float]
    half: tuple[float, float]
    yaw: float = 0.0

    def distance(self, pts: np.ndarray) -> np.ndarray:
        """Distance (m) from each point ``(..., 2)`` to the rectangle; 0 inside."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        d = np.asarray(pts, dtype=np.float64) - self.center
        u = np.abs(c * d[..., 0] + s * d[..., 1]) - self.half[0]
        v = np.abs(-s * d[..., 0] + c * d[..., 1]) - self.half[1]
        return np.hypot(np.maximum(u, 0.0), np.maximum(v, 0.0))

    def bounds(self) -> tuple[float, float, float, float]:
        c, s = abs(np.cos(self.yaw)), abs(np.sin(self.yaw))
        ex = c * self.half[0] + s * self.half[1]
        ey = s * self.half[0] + c * self.half[1]
        return self.center[0] - ex, self.center[1] - ey, self.center[0] + ex, self.center[1] + ey


@dataclass(frozen=True)
class Circle:
    center: tuple[float, float]
    radius: float

    def distance(self, pts: np.ndarray) -> np.ndarray:
        d = np.asarray(pts, dtype=np.float64) - self.center
        return np.maximum(np.hypot(d[..., 0], d[..., 1]) - self.radius, 0.0)

    def bounds(self) -> tuple[float, float, float, float]:
        r = self.radius
        return self.center[0] - r, self.center[1] - r, self.center[0] + r, self.center[1] + r


Footprint = Rect | Circle


# --- the grid -----------------------------------------------------------------------------------------------
class Grid:
    """A metric grid over ``bounds = (xmin, ymin, xmax, ymax)``; arrays are indexed ``[iy, ix]``."""

    def __init__(self, bounds: tuple[float, float, float, float], res: float = RES) -> None:
        self.res = res
        self.origin = np.array(bounds[:2], dtype=np.float64)
        self.shape = (
            int(np.ceil((bounds[3] - bounds[1]) / res)),
            int(np.ceil((bounds[2] - bounds[0]) / res)),
        )
        ys = self.origin[1] + (np.arange(self.shape[0]) + 0.5) * res
        xs = self.origin[0] + (np.arange(self.shape[1]) + 0.5) * res
        self.centers = np.stack(np.meshgrid(xs, ys), axis=-1)  # (ny, nx, 2)
        self.size = self.shape[0] * self.shape[1]

    def cell(self, xy) -> tuple[int, int]:
        ix = int(np.clip((xy[0] - self.origin[0]) // self.res, 0, self.shape[1] - 1))
        iy = int(np.clip((xy[1] - self.origin[1]) // self.res, 0, self.shape[0] - 1))
        return iy, ix

    def flat(self, xy) -> int:
        iy, ix = self.cell(xy)
        return iy * self.shape[1] + ix

    def window(self, fp: Footprint, margin: float = 0.0) -> tuple[slice, slice]:
        """The cells around a footprint's bounding box (plus ``margin`` metres)."""
        x0, y0, x1, y1 = fp.bounds()
        lo = np.floor((np.array([x0, y0]) - margin - self.origin) / self.res).astype(int) - 1
        hi = np.ceil((np.array([x1, y1]) + margin - self.origin) / self.res).astype(int) + 1
        return (
            slice(max(lo[1], 0), min(hi[1], self.shape[0])),
            slice(max(lo[0], 0), min(hi[0], self.shape[1])),
        )

    def rasterize(self, mask: np.ndarray, fp: Footprint, value=True) -> None:
        """Set ``mask`` on the cells the footprint touches (centre within half a cell of it)."""
        sl = self.window(fp)
        hit = fp.distance(self.centers[sl]) <= self.res / 2
        mask[sl][hit] = value

    def near(self, fp: Footprint, dist: float) -> np.ndarray:
        """Boolean grid: cell centres within ``dist`` metres of the footprint."""
        out = np.zeros(self.shape, dtype=bool)
        sl = self.window(fp, margin=dist)
        out[sl] = fp.distance(self.centers[sl]) <= dist
        return out

    def segment_free(self, free: np.ndarray, a, b) -> bool:
        """Whether every cell on the straight segment a-b is free (sampled every half cell)."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        n = max(int(np.ceil(np.linalg.norm(b - a) / (self.res / 2))), 1)
        pts = a + (b - a) * (np.arange(n + 1) / n)[:, None]
        idx = np.floor((pts - self.origin) / self.res).astype(int)
        if idx.min() < 0 or np.any(idx[:, 1] >= self.shape[0]) or np.any(idx[:, 0] >= self.shape[1]):
            return False
        return bool(free[idx[:, 1], idx[:, 0]].all())


def clearance(grid: Grid, blocked: np.ndarray) -> np.ndarray:
    """Metres from each cell centre to the nearest blocked cell centre (0 on blocked cells)."""
    from scipy.ndimage import distance_transform_edt  # scipy loads on first use: keeps `import vlagym` quick

    return distance_transform_edt(~blocked) * grid.res


def largest_component(free: np.ndarray) -> np.ndarray:
    """The biggest 4-connected region of ``free`` (4-connected: stricter than the planner's moves)."""
    from scipy.ndimage import label

    labels, n = label(free)
    if n == 0:
        return np.zeros_like(free)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


# --- shortest paths -----------------------------------------------------------------------------------------
class Field:
    """Distances from every cell to a goal region, with the way there (Dijkstra predecessors)."""

    def __init__(self, grid: Grid, dist: np.ndarray, pred: np.ndarray, source: int) -> None:
        self.grid = grid
        self.dist = dist  # flat, metres (or weighted metres); inf where unreachable
        self.pred = pred  # flat; ``source`` marks a seed cell of the region
        self.source = source

    def value(self, xy) -> float:
        return float(self.dist[self.grid.flat(xy)])

    def path(self, xy, max_cells: int | None = None) -> list[int]:
        """Flat cell indices from the cell at ``xy`` down to the region (the seed cell last)."""
        i = self.grid.flat(xy)
        if not np.isfinite(self.dist[i]):
            return []
        out = [i]
        while self.pred[i] != self.source and (max_cells is None or len(out) <= max_cells):
            i = int(self.pred[i])
            if i < 0:
                break
            out.append(i)
        return out

    def point(self, i: int) -> np.ndarray:
        iy, ix = divmod(int(i), self.grid.shape[1])
        return self.grid.centers[iy, ix].copy()


class Planner:
    """8-connected shortest paths over the free cells (no corner cutting), two edge weightings.

    ``weighted=False`` costs are plain metres (geodesic distances, path lengths); ``weighted=True``
    multiplies them by a penalty that grows near obstacles, so the expert keeps to the middle of
    doorways and away from furniture corners.
    """

    def __init__(
        self, grid: Grid, free: np.ndarray, clear: np.ndarray, comfort: float = 0.6, penalty: float = 4.0
    ) -> None:
        self.grid = grid
        self.free = free
        ny, nx = grid.shape
        idx = np.arange(grid.size).reshape(ny, nx)
        rows, cols, length = [], [], []
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            ra, rb = slice(0, ny - dy), slice(dy, ny)  # rows of a cell and of its neighbour
            ca, cb = slice(max(-dx, 0), nx - max(dx, 0)), slice(max(dx, 0), nx - max(-dx, 0))
            ok = free[ra, ca] & free[rb, cb]
            if dx and dy:  # a diagonal step needs both orthogonal neighbours free too (no corner cutting)
                ok &= free[ra, cb] & free[rb, ca]
            ia, ib = idx[ra, ca][ok], idx[rb, cb][ok]
            step = grid.res * (SQRT2 if dx and dy else 1.0)
            rows += [ia, ib]
            cols += [ib, ia]
            length += [np.full(ia.size, step), np.full(ia.size, step)]
        rows, cols, length = np.concatenate(rows), np.concatenate(cols), np.concatenate(length)
        near = np.clip((comfort - clear) / (comfort - ROBOT_RADIUS), 0.0, 1.0) ** 2
        pen = (1.0 + penalty * near).ravel()
        weighted = length * 0.5 * (pen[rows] + pen[cols])
        # CSR arrays built once, with room for a last row: the virtual source each search adds.
        order = np.lexsort((cols, rows))
        self._indices = cols[order].astype(np.int32)
        per_row = np.bincount(rows, minlength=grid.size + 1)
        self._indptr = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)
        self._data = {False: length[order], True: weighted[order]}

    def field(self, region: np.ndarray, seed_cost: np.ndarray | None = None, weighted: bool = False) -> Field:
        """Dijkstra from a region (flat cell indices) whose cells start at ``seed_cost`` (default 0)."""
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import dijkstra

        n = self.grid.size
        region = np.asarray(region, dtype=np.int64)
        seed = np.zeros(region.size) if seed_cost is None else np.asarray(seed_cost, dtype=np.float64)
        keep = np.isfinite(seed)
        order = np.argsort(region[keep])
        region, seed = region[keep][order], seed[keep][order]
        # A virtual source joins the region; scipy drops zero-weight edges, hence the tiny offset.
        indptr = self._indptr.copy()
        indptr[-1] += region.size
        data = np.concatenate([self._data[weighted], seed + 1e-9])
        indices = np.concatenate([self._indices, region.astype(np.int32)])
        graph = csr_matrix((data, indices, indptr), shape=(n + 1, n + 1))
        dist, pred = dijkstra(graph, directed=True, indices=n, return_predecessors=True)
        return Field(self.grid, dist[:n], pred[:n], source=n)


def smoothed_length(grid: Grid, free: np.ndarray, pts: np.ndarray) -> float:
    """Length of a grid path after string pulling (greedy line-of-sight shortcuts on ``free``)."""
    if len(pts) < 2:
        return 0.0
    total, anchor, last = 0.0, 0, 1
    for i in range(1, len(pts)):
        if grid.segment_free(free, pts[anchor], pts[i]):
            last = i
        else:
            total += float(np.linalg.norm(pts[last] - pts[anchor]))
            anchor, last = last, i
    return total + float(np.linalg.norm(pts[last] - pts[anchor]))
