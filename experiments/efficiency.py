"""Data efficiency (``vlagym data-efficiency``): success against the number of demonstrations.

For each demonstration count N the same training config runs with ``max_demos=N`` (the first N
demos of the dataset, so smaller sets are subsets of larger ones), its best checkpoint is evaluated
on the same test seeds, and the results go to ``efficiency.json``, ``efficiency.md`` and
``efficiency.png`` (success with 95% Wilson intervals against N, the expert as a reference line).

Every (N, run) is resumable: a finished evaluation is reused, an interrupted training run resumes
from its checkpoint, so rerunning the same command continues where it stopped.

The command's own settings are ``EfficiencyConfig``. Its ``config`` and ``overrides`` are the *training*
config's (``vlagym data-efficiency --config C.yaml steps=500``, as for ``vlagym train``), so a YAML file of
the command's settings is ``--settings FILE.yaml`` (which may name the training config as ``config:``) and
its key=value form ``--set``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from vlagym.core.splits import SPLIT_SEED_START
from vlagym.experiments.report import save_figure

PLOT_NAME = "efficiency.png"


@dataclasses.dataclass
class EfficiencyConfig:
    """Settings of ``vlagym data-efficiency``."""

    out: str
    """Output folder (one run per count, efficiency.json/.md/.png)."""
    config: str | None = None
    """Training YAML config (its data must hold max(demos) demos)."""
    overrides: list[str] = dataclasses.field(default_factory=list)
    """Training key=value overrides (as for vlagym train)."""
    demos: list[int] = dataclasses.field(default_factory=lambda: [25, 50, 100, 200])
    """Demonstration counts."""
    episodes: int = 100
    """Test episodes per count."""
    seed_start: int = SPLIT_SEED_START["test"]
    """First test seed."""
    workers: int | None = None
    """Evaluation worker processes (default: all cores)."""


def run_efficiency(
    config: str | None,
    overrides: list[str],
    demos: list[int],
    episodes: int,
    out: str | os.PathLike,
    seed_start: int = SPLIT_SEED_START["test"],
    workers: int | None = None,
    log=print,
) -> dict[str, Any]:
    """Train and evaluate once per demonstration count; returns the summary written to ``efficiency.json``."""
    from vlagym.agents.evaluation import validation_success
    from vlagym.experiments.evaluate import evaluate
    from vlagym.policies.train import load_config, train

    if not demos or any(n < 1 for n in demos):
        raise ValueError(f"demos must be positive counts, got {demos!r}")
    base = load_config(config, overrides)
    available = _count_demos(base.data)
    too_many = [n for n in demos if n > available]
    if too_many:
        raise ValueError(f"the data {base.data} holds {available} demos; cannot train on {too_many}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    expert = None
    for n in sorted(demos):
        run = out / f"demos_{n:04d}"
        report_path = run / "eval" / "report.json"
        if report_path.exists():
            log(f"[{n} demos] evaluation found in {report_path}; reusing it")
            report = json.loads(report_path.read_text())
        else:
            cfg = dataclasses.replace(base, max_demos=n, out=str(run))
            t = time.time()
            log(f"[{n} demos] training {cfg.policy} for {cfg.steps} steps in {run}")
            train(cfg, resume=(run / "config.yaml").exists(), validate=validation_success)
            train_s = time.time() - t
            log(f"[{n} demos] evaluating on {episodes} test seeds from {seed_start}")
            report = evaluate(str(run), [_env_of(cfg.data[0])], episodes, seed_start=seed_start, workers=workers,
                              expert=expert is None, out=str(run / "eval"), on_change="restart")
            report["train_wall_time_s"] = round(train_s, 1)
            (run / "eval" / "report.json").write_text(json.dumps(report, indent=2))
        overall = report["agents"]["policy"]["overall"]
        if "expert" in report["agents"]:
            expert = report["agents"]["expert"]["overall"]
        rows.append({"demos": n, "success_rate": overall["success_rate"], "ci95": overall["success_ci95"],
                     "successes": overall["successes"], "episodes": overall["episodes"],
                     "train_wall_time_s": report.get("train_wall_time_s"), "run": str(run)})
    summary = {"config": config, "overrides": list(overrides), "seed_start": seed_start, "episodes": episodes,
               "rows": rows, "expert": expert}
    tmp = out / "efficiency.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "efficiency.json")
    (out / "efficiency.md").write_text(to_markdown(summary))
    plot_efficiency(summary, out / PLOT_NAME)
    return summary


def to_markdown(summary: dict[str, Any]) -> str:
    lines = ["| demos | success | 95% Wilson CI |", "|---:|---:|---|"]
    for r in summary["rows"]:
        lo, hi = r["ci95"]
        lines.append(f"| {r['demos']} | {r['success_rate']:.0%} ({r['successes']}/{r['episodes']}) "
                     f"| {lo:.1%}-{hi:.1%} |")
    if summary.get("expert"):
        e = summary["expert"]
        lines.append(f"| expert | {e['success_rate']:.0%} ({e['successes']}/{e['episodes']}) | |")
    return "\n".join(lines) + "\n"


def plot_efficiency(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Success rate with Wilson error bars against demonstrations (log-2 axis), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    x = [r["demos"] for r in rows]
    y = [r["success_rate"] for r in rows]
    err = [[r["success_rate"] - r["ci95"][0] for r in rows], [r["ci95"][1] - r["success_rate"] for r in rows]]
    fig, ax = plt.subplots(figsize=(4.8, 3.4), dpi=110)
    ax.errorbar(x, y, yerr=err, marker="o", capsize=4, label="policy (95% Wilson CI)")
    if summary.get("expert"):
        ax.axhline(summary["expert"]["success_rate"], color="gray", linestyle="--", label="scripted expert")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("demonstrations")
    ax.set_ylabel(f"success ({summary['episodes']} test episodes)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _count_demos(folders: list[str]) -> int:
    from vlagym.dataio.dataset import index_demos

    return sum(len(index_demos(f)) for f in folders)


def _env_of(folder: str) -> str:
    from vlagym.dataio.dataset import env_args

    return env_args(folder)["env_name"]
