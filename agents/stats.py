"""Summaries of rollout episodes (the statistics themselves are in ``vlagym.core.stats``)."""

from __future__ import annotations


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
