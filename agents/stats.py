"""Honest statistics for success rates."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0/n and n/n.
    Returns ``(0.0, 1.0)`` when ``n == 0``.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval always holds p itself; min/max keep float rounding (1 - 1e-16 at n/n) from excluding it.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def handover_summary(episodes) -> dict[str, dict]:
    """Per env id, how the expert hand-over episodes (``TakeoverAgent``) split: solvable at the
    hand-over (and how many of those the expert solved), unsolvable (with the reasons counted), or
    ended before the hand-over came."""
    from collections import Counter

    out: dict[str, dict] = {}
    for ep in episodes:
        row = out.setdefault(ep.env_id, {"solvable": 0, "solved": 0, "unsolvable": 0, "ended_before": 0,
                                         "reasons": Counter()})
        handover = ep.info.get("handover")
        if handover is None:
            row["ended_before"] += 1
        elif handover["unsolvable"] is None:
            row["solvable"] += 1
            row["solved"] += int(ep.success)
        else:
            row["unsolvable"] += 1
            row["reasons"][handover["unsolvable"].split(" ", 3)[-1]] += 1
    for row in out.values():
        row["reasons"] = dict(row["reasons"])
        row["success_rate"] = row["solved"] / row["solvable"] if row["solvable"] else None
    return out
