"""Navigation metrics, in one place (Anderson et al. 2018, "On Evaluation of Embodied Navigation Agents").

Pure functions on per-episode arrays, as the navigation envs report them in the final ``info``
of each episode: ``success``, ``shortest_path_length`` (l), ``path_length`` (p) and
``distance_to_goal``.

* success rate: mean of S_i.
* SPL, success weighted by path length: mean over episodes of S_i * l_i / max(p_i, l_i).
* final distance to goal: mean of the distance left when the episode ended (m).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _episodes(name: str, values, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of per-episode values, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} episodes, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative, got min {arr.min()}")
    return arr


def success_rate(success) -> float:
    """Fraction of successful episodes (0.0 for no episodes)."""
    s = _episodes("success", success)
    return float(s.mean()) if s.size else 0.0


def spl_per_episode(success, shortest_path_length, path_length) -> np.ndarray:
    """S_i * l_i / max(p_i, l_i) for each episode.

    An episode whose shortest path is 0 (it starts at the goal) scores S_i: there is no detour
    to weigh against.
    """
    s = _episodes("success", success)
    l_ = _episodes("shortest_path_length", shortest_path_length, s.size)
    p = _episodes("path_length", path_length, s.size)
    if np.any((s != 0) & (s != 1)):
        raise ValueError("success must hold 0/1 (or booleans) per episode")
    denom = np.maximum(p, l_)
    ratio = np.divide(l_, denom, out=np.ones_like(l_), where=denom > 0)
    return s * ratio


def spl(success, shortest_path_length, path_length) -> float:
    """Mean SPL over episodes (0.0 for no episodes)."""
    per = spl_per_episode(success, shortest_path_length, path_length)
    return float(per.mean()) if per.size else 0.0


def final_distance_to_goal(distance_to_goal) -> float:
    """Mean distance to the goal (m) when the episodes ended (nan for no episodes)."""
    d = _episodes("distance_to_goal", distance_to_goal)
    return float(d.mean()) if d.size else float("nan")


def navigation_metrics(final_infos: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The three metrics from each episode's last ``info`` (keys as the navigation envs report them)."""
    keys = ("success", "shortest_path_length", "path_length", "distance_to_goal")
    missing = sorted({k for info in final_infos for k in keys if k not in info})
    if missing:
        raise ValueError(f"final infos lack {missing}; are these navigation episodes?")
    col = {k: [float(info[k]) for info in final_infos] for k in keys}
    return {
        "episodes": len(final_infos),
        "success_rate": success_rate(col["success"]),
        "spl": spl(col["success"], col["shortest_path_length"], col["path_length"]),
        "final_distance_to_goal": final_distance_to_goal(col["distance_to_goal"]),
    }
