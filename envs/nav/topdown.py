"""A top-down map drawn with numpy from the occupancy grid: for debugging and videos, no rendering.

Floors in their room colours, walls dark, furniture, coloured doors and landmarks from above;
the robot as a white disc with a black heading tick, the current goal's success circle in white.
North (+y) is up.
"""

from __future__ import annotations

import numpy as np

from vlagym.envs.nav.grid import ROBOT_RADIUS
from vlagym.envs.nav.objects import Landmark
from vlagym.envs.nav.scene import Scene

_BACKGROUND = (28, 28, 30)


class TopDownMap:
    def __init__(self, size: int = 128) -> None:
        if size < 16:
            raise ValueError(f"map_size must be at least 16 pixels, got {size}")
        self.size = size
        v, u = np.mgrid[0:size, 0:size] + 0.5
        self._u, self._v = u, v

    def reset(self, scene: Scene) -> None:
        """Draw the static picture (scene and landmarks) once per episode."""
        cells = scene.map_image()
        ny, nx = cells.shape[:2]
        scale = self.size / max(ny, nx)  # pixels per cell
        self._off = np.array([(self.size - nx * scale) / 2, (self.size - ny * scale) / 2])
        self._scale, self._ny, self._grid = scale, ny, scene.grid
        ix = np.floor((np.arange(self.size) + 0.5 - self._off[0]) / scale).astype(int)
        iy = ny - 1 - np.floor((np.arange(self.size) + 0.5 - self._off[1]) / scale).astype(int)
        base = np.empty((self.size, self.size, 3), dtype=np.uint8)
        base[:] = _BACKGROUND
        cols, rows = (ix >= 0) & (ix < nx), (iy >= 0) & (iy < ny)
        base[np.ix_(rows, cols)] = cells[np.ix_(iy[rows], ix[cols])]
        self._base = base
        self.pixels_per_metre = scale / scene.grid.res

    def pixel(self, xy) -> np.ndarray:
        """(u, v) image coordinates of a world point."""
        rel = (np.asarray(xy, dtype=np.float64) - self._grid.origin) / self._grid.res
        return np.array(
            [self._off[0] + rel[0] * self._scale, self._off[1] + (self._ny - rel[1]) * self._scale]
        )

    def draw(self, xy, yaw: float, goal: Landmark | None = None, goal_radius: float = 0.5) -> np.ndarray:
        img = self._base.copy()
        ppm = self.pixels_per_metre
        if goal is not None:
            r = max((goal.radius + goal_radius) * ppm, 3.0)
            win, d = self._disc(self.pixel(goal.xy), r + 1)
            img[win][np.abs(d - r) <= 0.6] = 255
        centre = self.pixel(xy)
        r = max(ROBOT_RADIUS * ppm, 2.0)
        win, d = self._disc(centre, r)
        img[win][d <= r] = 255
        for t in np.linspace(0.0, r * 1.3, int(np.ceil(r * 2)) + 2):  # the heading tick; image v grows south
            u, v = int(centre[0] + t * np.cos(yaw)), int(centre[1] - t * np.sin(yaw))
            if 0 <= u < self.size and 0 <= v < self.size:
                img[v, u] = 0
        return img

    def _disc(self, centre, r: float):
        """The pixel window around a disc and each of its pixels' distance to the centre."""
        u0, v0 = (max(int(c - r) - 1, 0) for c in centre)
        u1, v1 = (min(int(c + r) + 2, self.size) for c in centre)
        win = (slice(v0, max(v1, v0)), slice(u0, max(u1, u0)))
        return win, np.hypot(self._u[win] - centre[0], self._v[win] - centre[1])
