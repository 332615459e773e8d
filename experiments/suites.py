"""Evaluation suites (``vlagym eval --suite``): success per generalization level, or per perturbation
and strength, for a policy beside the expert, on held-out test seeds, in worker processes.

* ``generalization``: every level L1-L5 that a task supports (``vlagym.envs.levels``). Each level gets
  its own block of test seeds (level k uses ``seed_start + k * episodes`` onwards), so no two levels
  share an episode and none touches the training split.
* ``robustness``: every perturbation (``vlagym.envs.perturb``) at each strength, at level L1 (the
  training distribution on new seeds), so only the images change. All conditions use the same test
  seeds, so a difference between strengths is the perturbation's effect, not a different draw of
  episodes; strength 0 (no perturbation) is run once and shared by every curve.

Writes ``report.json`` (every cell with its 95% Wilson interval, seeds and provenance), ``report.md``
(the tables) and PNG plots: ``generalization.png`` (success against level) or ``robustness.png``
(success against strength, one panel per perturbation), policy beside expert.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlagym.agents.backends import Backend
from vlagym.agents.evaluation import Cell, evaluate_cells
from vlagym.core.io import atomic_write_text
from vlagym.core.provenance import provenance
from vlagym.core.splits import SPLIT_SEED_START, split_of
from vlagym.envs.levels import EVAL_LEVELS, LEVEL_DESCRIPTIONS
from vlagym.envs.perturb import PERTURBATIONS, format_perturb
from vlagym.experiments.report import save_figure

SUITES = ("generalization", "robustness")
DEFAULT_STRENGTHS = (0.25, 0.5, 1.0)


def supported_levels(env_id: str) -> tuple[str, ...]:
    """The evaluation levels the env's task defines (L5 only where it has a composition)."""
    import gymnasium as gym

    from vlagym.envs import check_env_id
    from vlagym.envs.registry import IDS, task_class

    family, _ = IDS[check_env_id(env_id)]
    cls = task_class(family, gym.spec(env_id).kwargs["task"])
    return tuple(level for level in EVAL_LEVELS if level in cls.levels)


def run_suite(
    suite: str,
    policy: str | None,
    env_ids: list[str],
    episodes: int,
    seed_start: int = SPLIT_SEED_START["test"],
    workers: int | None = None,
    expert: bool = True,
    out: str | None = None,
    levels: list[str] | None = None,
    perturbations: list[str] | None = None,
    strengths: list[float] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    executor: str = "local",
    address: str | None = None,
) -> dict[str, Any]:
    """Run a suite; returns the report (and writes it with plots when ``out`` is given). ``executor`` and
    ``address``: where the workers run, local processes or Ray actors (``vlagym.agents.backends``)."""
    pool = Backend(executor, address)
    pool.check()
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(SUITES)}, got {suite!r}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if policy is None and not expert:
        raise ValueError("nothing to evaluate: give a policy or keep the expert")
    kwargs = dict(env_kwargs or {})
    agents: dict[str, str] = {}
    if policy is not None:
        from vlagym.agents.policy_agent import policy_env_kwargs, resolve_policy_dir

        agents["policy"] = str(resolve_policy_dir(policy))
        kwargs = {**policy_env_kwargs(policy), **kwargs}  # the env as the policy saw it in training
    if expert:
        agents["expert"] = "expert"
    # A policy trained at a level or with visual randomization: the suite sets both itself.
    trained_with = {key: kwargs.pop(key) for key in ("level", "perturb") if key in kwargs}
    conditions = _conditions(suite, env_ids, levels, perturbations, strengths)
    for _, cond in conditions:
        cond["seed_start"] = seed_start + cond.pop("level_index", 0) * episodes
    span = (len(EVAL_LEVELS) if suite == "generalization" else 1) * episodes
    last = seed_start + span - 1
    if split_of(seed_start) != "test" or split_of(last) != "test":
        raise ValueError(f"suite seeds {seed_start}..{last} must lie in the test split "
                         f"[{SPLIT_SEED_START['test']}, ...)")

    from vlagym.envs import check_env_kwargs

    for env_id, cond in conditions:  # an unknown or invalid kwarg fails here, before any episode
        check_env_kwargs(env_id, {**kwargs, **cond["env_kwargs"]})
    t0 = time.time()
    plan, cells = [], []
    for env_id, cond in conditions:
        seeds = list(range(cond["seed_start"], cond["seed_start"] + episodes))
        ek = {**kwargs, **cond["env_kwargs"]}
        for name, path in agents.items():
            cells.append({"agent": name, "env_id": env_id, **{k: v for k, v in cond.items() if k != "env_kwargs"},
                          "env_kwargs": ek, "seeds": seeds})
            plan.append(Cell(path, env_id, seeds, ek))
    for cell, ev in zip(cells, evaluate_cells(plan, workers=workers, desc=f"eval {suite}", backend=pool)):
        cell.update(ev.summary)
        cell["episode_splits"] = sorted({e.info.get("generalization_split", "") for e in ev.episodes})
    report = {
        "provenance": provenance(),
        "job": f"eval --suite {suite}",
        "suite": suite,
        "policy": agents.get("policy"),
        "env_ids": env_ids,
        "episodes_per_cell": episodes,
        "env_kwargs": kwargs,
        "policy_trained_with": trained_with,
        "cells": cells,
        "wall_time_s": round(time.time() - t0, 1),
    }
    if out:
        report["paths"] = write_suite_report(report, out)
    return report


def _conditions(suite, env_ids, levels, perturbations, strengths) -> list[tuple[str, dict[str, Any]]]:
    out = []
    if suite == "generalization":
        for level in levels or EVAL_LEVELS:
            if level not in EVAL_LEVELS:
                raise ValueError(f"unknown level {level!r}; choose from {', '.join(EVAL_LEVELS)}")
        for env_id in env_ids:
            have = supported_levels(env_id)
            for k, level in enumerate(EVAL_LEVELS):
                if level in (levels or EVAL_LEVELS) and level in have:
                    out.append((env_id, {"level": level, "level_index": k, "env_kwargs": {"level": level}}))
        return out
    names = list(perturbations or PERTURBATIONS)
    for name in names:
        if name not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {name!r}; choose from {', '.join(PERTURBATIONS)}")
    strengths = sorted(set(strengths or DEFAULT_STRENGTHS))
    for s in strengths:
        if not 0.0 < s <= 1.0:
            raise ValueError(f"strengths must be in (0, 1] (strength 0 always runs), got {s}")
    for env_id in env_ids:
        out.append((env_id, {"perturbation": "none", "strength": 0.0, "env_kwargs": {"level": "L1"}}))
        for name in names:
            for s in strengths:
                out.append((env_id, {"perturbation": name, "strength": s,
                                     "env_kwargs": {"level": "L1", "perturb": format_perturb({name: s})}}))
    return out


# --- report ----------------------------------------------------------------------------------------------------
def to_markdown(report: dict[str, Any]) -> str:
    prov = report["provenance"]
    lines = [f"# vlagym {report['suite']} suite", "",
             f"vlagym {prov['vlagym_version']} (git {prov['git_revision']}), {prov['created']}; "
             f"{report['episodes_per_cell']} episodes per cell; policy: {report['policy'] or '(none)'}", ""]
    if report["suite"] == "generalization":
        lines += ["| agent | task | level | episodes | success | 95% CI | mean steps |",
                  "|---|---|---|---:|---:|---|---:|"]
        for c in report["cells"]:
            lines.append(f"| {c['agent']} | {c['env_id']} | {c['level']} ({LEVEL_DESCRIPTIONS[c['level']]}) | "
                         f"{c['episodes']} | {c['success_rate']:.0%} | [{c['success_ci95'][0]:.0%}, "
                         f"{c['success_ci95'][1]:.0%}] | {c['mean_steps']:.1f} |")
    else:
        lines += ["| agent | task | perturbation | strength | episodes | success | 95% CI | mean steps |",
                  "|---|---|---|---:|---:|---:|---|---:|"]
        for c in report["cells"]:
            lines.append(f"| {c['agent']} | {c['env_id']} | {c['perturbation']} | {c['strength']:g} | "
                         f"{c['episodes']} | {c['success_rate']:.0%} | [{c['success_ci95'][0]:.0%}, "
                         f"{c['success_ci95'][1]:.0%}] | {c['mean_steps']:.1f} |")
    return "\n".join(lines) + "\n"


def write_suite_report(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
    """report.json, report.md and the suite's PNG plot, each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    plot = out / f"{report['suite']}.png"
    _plot(report, plot)
    paths["plot"] = str(plot)
    report = {**report, "paths": {**paths, "report_json": str(out / "report.json"),
                                  "report_md": str(out / "report.md")}}
    for name, text in (("report.json", json.dumps(report, indent=2)), ("report.md", to_markdown(report))):
        atomic_write_text(out / name, text)
    return report["paths"]


COLORS = {"policy": "tab:blue", "expert": "tab:gray"}


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = report["cells"]
    agents = list(dict.fromkeys(c["agent"] for c in cells))
    env_ids = list(dict.fromkeys(c["env_id"] for c in cells))
    if report["suite"] == "generalization":
        fig, axes = plt.subplots(1, len(env_ids), figsize=(3.6 * len(env_ids) + 0.6, 3.2), squeeze=False)
        width = 0.8 / len(agents)
        for ax, env_id in zip(axes[0], env_ids):
            levels = list(dict.fromkeys(c["level"] for c in cells if c["env_id"] == env_id))
            for k, agent in enumerate(agents):
                rows = {c["level"]: c for c in cells if c["env_id"] == env_id and c["agent"] == agent}
                x = np.arange(len(levels)) + (k - (len(agents) - 1) / 2) * width
                rate = np.array([rows[lv]["success_rate"] for lv in levels])
                lo = np.array([rows[lv]["success_ci95"][0] for lv in levels])
                hi = np.array([rows[lv]["success_ci95"][1] for lv in levels])
                ax.bar(x, rate, width, color=COLORS.get(agent), label=agent)
                ax.errorbar(x, rate, yerr=[rate - lo, hi - rate], fmt="none", ecolor="black", capsize=3, lw=1)
            ax.set_xticks(np.arange(len(levels)), levels)
            ax.set_ylim(0, 1.05)
            ax.set_title(env_id.split("/")[-1], fontsize=9)
            ax.set_ylabel("success (95% Wilson CI)")
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"success by generalization level ({report['episodes_per_cell']} episodes per bar)", fontsize=10)
    else:
        names = list(dict.fromkeys(c["perturbation"] for c in cells if c["perturbation"] != "none"))
        ncol = min(4, len(names))
        nrow = -(-len(names) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.6 * nrow), squeeze=False, sharey=True)
        styles = ["-", "--", ":", "-."]
        for ax, name in zip(axes.flat, names):
            for e, env_id in enumerate(env_ids):
                for agent in agents:
                    rows = [c for c in cells if c["env_id"] == env_id and c["agent"] == agent
                            and c["perturbation"] in ("none", name)]
                    rows.sort(key=lambda c: c["strength"])
                    x = [c["strength"] for c in rows]
                    y = [c["success_rate"] for c in rows]
                    label = agent if len(env_ids) == 1 else f"{agent} {env_id.split('/')[-1]}"
                    ax.plot(x, y, styles[e % len(styles)], marker="o", ms=3, color=COLORS.get(agent), label=label)
                    ax.fill_between(x, [c["success_ci95"][0] for c in rows], [c["success_ci95"][1] for c in rows],
                                    color=COLORS.get(agent), alpha=0.15, lw=0)
            ax.set_title(name, fontsize=9)
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("strength", fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel("success (95% CI)")
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"success against perturbation strength ({report['episodes_per_cell']} episodes per point)",
                     fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


# --- comparing policies ----------------------------------------------------------------------------------------
@dataclass
class SuiteCompareConfig:
    """Settings of ``vlagym suite-compare``."""

    reports: list[str]
    """Suite output folders (or their report.json), one column each."""
    out: str
    """Folder for compare.md, compare.json and compare.png."""
    labels: list[str] | None = None
    """Column names, one per report (default: the folder names)."""


def load_suite_report(path: str | os.PathLike) -> dict[str, Any]:
    """A suite's report.json, given the file or the folder ``vlagym eval --suite --out`` wrote."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.exists():
        raise FileNotFoundError(f"no suite report at {p} (run `vlagym eval --suite ... --out DIR` first)")
    report = json.loads(p.read_text())
    if report.get("suite") not in SUITES or "cells" not in report:
        raise ValueError(f"{p} is not a suite report (no 'suite' and 'cells'; a plain `vlagym eval` report?)")
    return report


def _condition(cell: dict[str, Any]) -> str:
    if "level" in cell:
        return f"{cell['env_id'].split('/')[-1]} {cell['level']}"
    name = "none" if cell["perturbation"] == "none" else f"{cell['perturbation']} {cell['strength']:g}"
    return f"{cell['env_id'].split('/')[-1]} {name}"


def compare_suites(reports: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """Put several policies' runs of one suite side by side, condition by condition.

    Every report must be the same suite, and a condition that two reports share must have been run on
    the same seeds (a comparison over different episodes would mix the policies' difference with the
    draw's). The expert column comes from the first report that ran the expert there.
    """
    if len(reports) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(reports)} reports")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels}")
    if not reports:
        raise ValueError("nothing to compare: give at least one suite report")
    suites = {r["suite"] for r in reports}
    if len(suites) != 1:
        raise ValueError(f"cannot compare different suites: {sorted(suites)}")
    conditions: dict[str, dict[str, Any]] = {}
    seeds: dict[str, tuple[int, ...]] = {}
    for label, report in zip(labels, reports):
        if not any(c["agent"] == "policy" for c in report["cells"]):
            raise ValueError(f"report {label!r} holds no policy (an expert-only suite run)")
        for cell in report["cells"]:
            cond = _condition(cell)
            if seeds.setdefault(cond, tuple(cell["seeds"])) != tuple(cell["seeds"]):
                raise ValueError(f"{cond}: report {label!r} ran other seeds than the reports before it; "
                                 "rerun the suites with the same --seed-start and --episodes")
            row = conditions.setdefault(cond, {})
            key = label if cell["agent"] == "policy" else "expert"
            if key not in row:
                row[key] = {k: cell[k] for k in ("episodes", "successes", "success_rate", "success_ci95")}
    return {"suite": suites.pop(), "labels": list(labels), "policies": [r.get("policy") for r in reports],
            "trained_with": [r.get("policy_trained_with", {}) for r in reports],
            "rows": [{"condition": cond, "cells": row} for cond, row in conditions.items()]}


def comparison_markdown(comparison: dict[str, Any]) -> str:
    columns = [*comparison["labels"], "expert"]
    lines = [f"# {comparison['suite']} suite: {', '.join(comparison['labels'])}", "",
             "| condition | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in comparison["rows"]:
        cells = []
        for col in columns:
            c = row["cells"].get(col)
            cells.append("-" if c is None else f"{c['success_rate']:.0%} ({c['success_ci95'][0]:.0%}-"
                         f"{c['success_ci95'][1]:.0%}), {c['successes']}/{c['episodes']}")
        lines.append(f"| {row['condition']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot_comparison(comparison: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = [*comparison["labels"], "expert"]
    rows = comparison["rows"]
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * len(rows) * len(columns) + 1.5), 3.6))
    palette = plt.get_cmap("tab10")
    for k, col in enumerate(columns):
        x = np.arange(len(rows)) + (k - (len(columns) - 1) / 2) * width
        have = [i for i, r in enumerate(rows) if col in r["cells"]]
        rate = np.array([rows[i]["cells"][col]["success_rate"] for i in have])
        lo = np.array([rows[i]["cells"][col]["success_ci95"][0] for i in have])
        hi = np.array([rows[i]["cells"][col]["success_ci95"][1] for i in have])
        color = "tab:gray" if col == "expert" else palette(k % 10)
        ax.bar(x[have], rate, width, color=color, label=col)
        ax.errorbar(x[have], rate, yerr=[rate - lo, hi - rate], fmt="none", ecolor="black", capsize=2, lw=0.8)
    names = [r["condition"] for r in rows]
    if len({n.split(" ")[0] for n in names}) == 1:  # one task: the condition alone
        names = [n.split(" ", 1)[1] for n in names]
    ax.set_xticks(np.arange(len(rows)), names, rotation=30 if len(rows) > 5 else 0, ha="right" if len(rows) > 5
                  else "center", fontsize=8)
    ax.set_ylim(0, 1.25)  # room for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("success (95% Wilson CI)")
    ax.legend(fontsize=7, ncol=min(len(columns), 5), loc="upper center")
    ax.set_title(f"{comparison['suite']} suite", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def write_comparison(comparison: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
    """compare.json, compare.md and compare.png in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"plot": str(out / "compare.png"), "json": str(out / "compare.json"), "md": str(out / "compare.md")}
    _plot_comparison(comparison, out / "compare.png")
    atomic_write_text(out / "compare.json", json.dumps(comparison, indent=2))
    atomic_write_text(out / "compare.md", comparison_markdown(comparison))
    return paths
