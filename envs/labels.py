"""Privileged labels: where each role an instruction names is, as each camera sees it and as the robot does.

A task names *roles* (``Task.label_roles``): the object to move, the bowl, base cube or region it goes to,
the navigation goal being sought. For every role and every step the env reports, in ``info["labels"]``,
a flat dict of fixed keys (the same keys every step of a task, so they stack into dataset arrays):

``<role>/pos``                float32 (3,): the role's point in the robot's frame (tabletop: the
                              end-effector link's frame; navigation: the base, x forward, y left, z up)
``<role>/yaw``                float32 (2,): ``(sin k*d, cos k*d)`` of the role's yaw ``d`` relative to that
                              frame's, with ``k`` its shape's rotational symmetry (a cube looks the same
                              every quarter turn: k = 4); (0, 1) for what looks the same at every angle
                              (cylinders, bowls, regions, balls)
``<role>/<camera>/uv``        float32 (2,): its projected pixel position, (column, row) over (width,
                              height), so (0, 0) is the top-left corner and (1, 1) the bottom-right one;
                              values outside [0, 1] lie outside the image, and (-1, -1) marks a point
                              behind the camera
``<role>/<camera>/visible``   bool: in frame, in front of the camera and not hidden: the segmentation
                              mask shows at least one pixel of the role's body (a region, which has no
                              body, is visible where its projected pixel shows no robot)

The cameras are the rendered image keys (``rgb``, ``rgb_wrist``), with the camera actually used for the
frame (a perturbed camera pose included); with ``obs_mode="state"`` nothing is rendered and only the
``pos`` keys are reported. The segmentation mask comes from the same render call as the image, so
labels cost one mask per camera and step, not a second render (``vlagym bench env`` measures it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RoleTarget:
    """One role at one step: a world point, the body whose pixels make it visible (None: a region), and its
    yaw with the order of its rotational symmetry (0: it looks the same at every angle)."""

    position: np.ndarray
    body: str | None
    yaw: float = 0.0
    symmetry: int = 0


@dataclass(frozen=True)
class View:
    """What one rendered frame saw: the camera's matrices and the segmentation mask (H, W) of body ids."""

    view: tuple[float, ...]
    proj: tuple[float, ...]
    seg: np.ndarray

    @functools.cached_property
    def matrix(self) -> np.ndarray:
        """Projection times view, (4, 4) float64: world point to clip coordinates (computed once per frame)."""
        v = np.asarray(self.view, dtype=np.float64).reshape(4, 4).T
        p = np.asarray(self.proj, dtype=np.float64).reshape(4, 4).T
        return p @ v

    @property
    def size(self) -> tuple[int, int]:
        return self.seg.shape[0], self.seg.shape[1]


def project(view: View, point: np.ndarray) -> tuple[np.ndarray, bool]:
    """Normalised (column, row) of a world point in ``view``, and whether it lies in front of the camera.

    PyBullet's matrices are column-major 4x4 lists (OpenGL convention).
    """
    clip = view.matrix @ np.append(np.asarray(point, dtype=np.float64), 1.0)
    w = clip[3]
    if w <= 1e-9:  # behind the eye: no meaningful projection (a finite sentinel, so datasets stay finite)
        return np.array([-1.0, -1.0], dtype=np.float32), False
    ndc = clip[:3] / w
    return np.array([(ndc[0] + 1.0) / 2.0, (1.0 - ndc[1]) / 2.0], dtype=np.float32), True


def in_frame(uv: np.ndarray) -> bool:
    u, v = float(uv[0]), float(uv[1])
    return 0.0 <= u <= 1.0 and 0.0 <= v <= 1.0


def pixel(view: View, uv: np.ndarray) -> tuple[int, int]:
    """Row and column of the pixel that holds normalised position ``uv`` (which must be in frame)."""
    h, w = view.size
    return min(int(uv[1] * h), h - 1), min(int(uv[0] * w), w - 1)


def compute_labels(
    roles: dict[str, RoleTarget],
    bodies: dict[str, int],
    frame: tuple[np.ndarray, np.ndarray],
    views: dict[str, View],
    robot_body: str = "robot",
) -> dict[str, np.ndarray]:
    """The flat label dict of one step (see the module docstring).

    Args:
        roles: role name -> where it is now.
        bodies: the simulator's body names -> PyBullet ids.
        frame: the robot frame as (origin (3,), rotation (3, 3) whose columns are its axes in the world).
        views: camera key -> the frame it rendered.
        robot_body: the body whose pixels hide a region.
    """
    origin, rot = frame
    frame_yaw = float(np.arctan2(rot[1, 0], rot[0, 0]))
    out: dict[str, np.ndarray] = {}
    for name, role in roles.items():
        out[f"{name}/pos"] = (rot.T @ (np.asarray(role.position, dtype=np.float64) - origin)).astype(np.float32)
        k = role.symmetry * (role.yaw - frame_yaw)
        out[f"{name}/yaw"] = np.array([np.sin(k), np.cos(k)] if role.symmetry else [0.0, 1.0], dtype=np.float32)
        for key, view in views.items():
            uv, ahead = project(view, role.position)
            visible = False
            if ahead and in_frame(uv):
                if role.body is not None:
                    visible = bool(np.any(view.seg == bodies[role.body]))
                else:
                    visible = int(view.seg[pixel(view, uv)]) != bodies.get(robot_body, -2)
            out[f"{name}/{key}/uv"] = uv
            out[f"{name}/{key}/visible"] = np.bool_(visible)
    return out


def label_keys(roles: tuple[str, ...], cameras: tuple[str, ...]) -> list[str]:
    """Every key ``compute_labels`` reports for these roles and cameras, in a fixed order."""
    keys = []
    for name in roles:
        keys += [f"{name}/pos", f"{name}/yaw"]
        for key in cameras:
            keys += [f"{name}/{key}/uv", f"{name}/{key}/visible"]
    return keys
