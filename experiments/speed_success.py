"""Speed against success: evaluated policies (float, int8, ONNX, pruned, distilled) timed in one run, side by side.

``vlagym speed-success EVAL...`` reads each evaluation folder's report.json (the policy it evaluated, its success
with the 95% Wilson interval), loads that policy the way evaluation did, and times its ``act`` at batch 1 on one
thread on the same observations (``policies.compress.benchmark.step_latency``): expert rollouts on validation
seeds of the policy's own env. Timing every policy in one process, one after the other, makes the ratios
comparable on a shared machine; absolute milliseconds are this machine's.

It writes ``speed_success.json``, ``speed_success.md`` (the table) and ``speed_success.png``: Hz (log scale)
against success with its interval, one curve per policy family, each family's fastest-at-its-success points
(its Pareto front) joined.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlagym.core.io import atomic_write_text, read_json
from vlagym.experiments.report import save_figure


@dataclass
class SpeedSuccessConfig:
    """Settings of ``vlagym speed-success``."""

    evals: list[str]
    """Evaluation folders (``vlagym eval --out``), one point each."""
    out: str
    """Folder for speed_success.json / .md / .png."""
    labels: list[str] | None = None
    """Names of the points, one per evaluation (default: the evaluated policy folders' names)."""
    families: list[str] | None = None
    """Curve of each point, one per evaluation (default: the policy's type, e.g. bcz, rt1)."""
    calls: int = 200
    """Timed ``act`` calls per policy (after 5 untimed ones)."""
    episodes: int = 2
    """Expert episodes whose observations the timing cycles through."""
    steps: int = 30
    """Observations per episode, at most."""
    threads: int = 1
    """torch and ONNX Runtime threads while timing."""


def _policy_of(report: dict[str, Any], folder: Path) -> str:
    """The policy folder an evaluation ran: its ONNX export when it ran with ``--backend onnxruntime``."""
    policy = report.get("backend_policy") or report.get("policy")
    if not policy or not isinstance(policy, str):
        raise ValueError(f"{folder / 'report.json'} names no evaluated policy (an expert-only evaluation?)")
    return policy


def _success(report: dict[str, Any], folder: Path) -> dict[str, Any]:
    try:
        overall = report["agents"]["policy"]["overall"]
    except KeyError as e:
        raise ValueError(f"{folder / 'report.json'} has no policy row (agents.policy.overall)") from e
    return {k: overall[k] for k in ("episodes", "successes", "success_rate", "success_ci95")}


def speed_success(cfg: SpeedSuccessConfig) -> list[dict[str, Any]]:
    """One row per evaluation: label, family, policy, success with its interval, parameters, p50/p95 ms and Hz."""
    from vlagym.core.env_args import env_id_of
    from vlagym.policies import load_policy
    from vlagym.policies.compress import read_record
    from vlagym.policies.compress.benchmark import count_parameters, step_latency
    from vlagym.policies.compress.calibration import rollout_observations, teacher_env_kwargs

    if not cfg.evals:
        raise ValueError("give at least one evaluation folder (vlagym eval --out DIR)")
    for name, values in (("labels", cfg.labels), ("families", cfg.families)):
        if values is not None and len(values) != len(cfg.evals):
            raise ValueError(f"--{name} gives {len(values)} names for {len(cfg.evals)} evaluations")
    observations: dict[tuple, list[dict[str, Any]]] = {}
    rows = []
    for i, folder in enumerate(Path(e) for e in cfg.evals):
        if not (folder / "report.json").exists():
            raise FileNotFoundError(f"{folder / 'report.json'} not found; is {folder} a vlagym eval --out folder?")
        report = read_json(folder / "report.json")
        policy_dir = _policy_of(report, folder)
        if not Path(policy_dir).exists():
            raise FileNotFoundError(f"{folder}: the evaluated policy {policy_dir} is gone")
        policy = load_policy(policy_dir)
        env_args = read_json(Path(policy_dir) / "env_args.json")
        env_id, kwargs = env_id_of(env_args), teacher_env_kwargs(policy_dir)
        key = (env_id, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in observations:
            episodes = rollout_observations(env_id, cfg.episodes, max_steps=cfg.steps, env_kwargs=kwargs)
            first = episodes[0][0]["instruction"]  # one instruction: act re-encodes it on a change
            observations[key] = [o for ep in episodes for o in ep if o["instruction"] == first]
        timing = step_latency(policy, observations[key], calls=cfg.calls, threads=cfg.threads)
        record = read_record(policy_dir)
        rows.append({
            "label": cfg.labels[i] if cfg.labels else Path(policy_dir).name,
            "family": cfg.families[i] if cfg.families else read_json(Path(policy_dir) / "config.json")["type"],
            "method": record["method"] if record else "float",
            "policy": policy_dir, "eval": str(folder), "env": env_id,
            **_success(report, folder), "parameters": count_parameters(policy), **timing})
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """The table, with each point's speed-up over the slowest float policy of its family."""
    base = {}
    for r in rows:
        if r["method"] == "float" and r["hz"] < base.get(r["family"], float("inf")):
            base[r["family"]] = r["hz"]
    lines = ["| family | policy | method | success (95% CI) | params (M) | p50 ms | p95 ms | Hz | x float |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lo, hi = r["success_ci95"]
        speed = f"{r['hz'] / base[r['family']]:.1f}" if r["family"] in base else "-"
        lines.append(f"| {r['family']} | {r['label']} | {r['method']} | {r['success_rate']:.0%} ({lo:.0%}-{hi:.0%}), "
                     f"{r['episodes']} ep | {r['parameters'] / 1e6:.2f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                     f"{r['hz']:.0f} | {speed} |")
    return "\n".join(lines) + "\n"


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row of the list beats on both speed and success, fastest first."""
    front = [r for r in rows if not any(o is not r and o["hz"] >= r["hz"] and o["success_rate"] >= r["success_rate"]
                                        and (o["hz"] > r["hz"] or o["success_rate"] > r["success_rate"])
                                        for o in rows)]
    return sorted(front, key=lambda r: -r["hz"])


def plot(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = sorted((r for r in rows if r["family"] == family), key=lambda r: r["hz"])
        x = [r["hz"] for r in mine]
        y = [100 * r["success_rate"] for r in mine]
        err = [[100 * (r["success_rate"] - r["success_ci95"][0]) for r in mine],
               [100 * (r["success_ci95"][1] - r["success_rate"]) for r in mine]]
        points = ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label=family)
        front = sorted(pareto_front(mine), key=lambda r: r["hz"])
        ax.plot([r["hz"] for r in front], [100 * r["success_rate"] for r in front], "-",
                color=points[0].get_color(), alpha=0.7)
        for r in mine:
            ax.annotate(r["label"], (r["hz"], 100 * r["success_rate"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("control rate the policy sustains (Hz, 1 / p50 act time, batch 1, one thread)")
    ax.set_ylabel("success (%), 95% Wilson interval")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="family (line: Pareto front)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def write(rows: list[dict[str, Any]], out: str | os.PathLike) -> dict[str, Path]:
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "speed_success.json", json.dumps(rows, indent=2))
    atomic_write_text(out / "speed_success.md", to_markdown(rows))
    return {"json": out / "speed_success.json", "md": out / "speed_success.md",
            "png": plot(rows, out / "speed_success.png")}
