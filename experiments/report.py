"""Evaluation reports: ``report.json`` for machines, ``report.md`` for people."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from vlagym.agents.rollout import Episode, summarize
from vlagym.core.io import atomic_write_text
from vlagym.core.provenance import provenance


def build_report(rows: dict[str, list[Episode]], seeds: dict[str, list[int]], **extra) -> dict[str, Any]:
    """Group episodes by agent and env id; ``rows`` maps an agent name ("expert", ...) to episodes."""
    report: dict[str, Any] = {"provenance": provenance(), **extra, "agents": {}}
    for agent, episodes in rows.items():
        by_env: dict[str, list[Episode]] = defaultdict(list)
        for ep in episodes:
            by_env[ep.env_id].append(ep)
        report["agents"][agent] = {
            "overall": summarize(episodes),
            "per_task": {env_id: {**summarize(eps), "seeds": seeds.get(env_id, [])} for env_id, eps in by_env.items()},
            "episodes": [ep.summary() for ep in episodes],
        }
    return report


def agents_table(agents: dict[str, Any]) -> list[str]:
    """Markdown table rows: one per agent and task, plus each agent's overall row."""
    lines = ["| agent | task | episodes | success | 95% CI | SPL | mean steps | final distance (m) | agent ms/step |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for agent, block in agents.items():
        rows = list(block["per_task"].items())
        if len(rows) > 1:
            rows.append(("**overall**", block["overall"]))
        for env_id, s in rows:
            dist = "-" if s["final_distance_mean"] is None else f"{s['final_distance_mean']:.3f}"
            spl = f"{s['spl']:.3f}" if "spl" in s else "-"
            lines.append(
                f"| {agent} | {env_id} | {s['episodes']} | {s['success_rate']:.1%} | "
                f"[{s['success_ci95'][0]:.1%}, {s['success_ci95'][1]:.1%}] | {spl} | {s['mean_steps']:.1f} | "
                f"{dist} | {s['agent_ms_per_step']:.2f} |"
            )
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    prov = report["provenance"]
    lines = ["# vlagym evaluation report", "",
             f"vlagym {prov['vlagym_version']} (git {prov['git_revision']}), {prov['created']}", ""]
    if "env_kwargs" in report:
        kwargs = report["env_kwargs"]
        text = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) if kwargs else "none (the envs' defaults)"
        lines += [f"env kwargs: {text}", ""]
    if report.get("backend", "torch") != "torch" or report.get("latency_ms"):
        ms = report.get("latency_ms") or 0
        latency = "measured per decision" if ms == "measured" else f"{ms:g} ms per decision"
        lines += [f"policy backend: {report.get('backend', 'torch')}; latency: {latency}", ""]
    return "\n".join(lines + agents_table(report["agents"])) + "\n"


def write_report(report: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write report.json and report.md atomically into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("report.json", json.dumps(report, indent=2)), ("report.md", to_markdown(report))):
        atomic_write_text(out / name, text)
        paths.append(out / name)
    return paths[0], paths[1]


def save_figure(fig, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Write a matplotlib figure atomically (a temporary file, then ``os.replace``) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, **({"dpi": dpi} if dpi else {}))
    plt.close(fig)
    os.replace(tmp, path)
    return path
