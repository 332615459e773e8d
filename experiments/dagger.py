"""Interactive imitation with the scripted experts: DAgger (``vlagym dagger``).

Behavior cloning only sees the expert's own states; a policy that drifts off them was never shown
the way back. Each DAgger round (Ross et al., 2011) rolls out the current policy (with the expert's
action executed instead with probability ``beta``, decaying over the rounds), has the expert label
every visited state with its noiseless plan, adds those episodes to the aggregated dataset, retrains
from the previous weights on all of it, and evaluates on validation seeds. The experts read their
phase from the simulator state (``vlagym.envs.tabletop.expert``), so their labels are right at
states they never drove into.

Layout of ``out``::

    dagger.json               the settings; a rerun with other ones is refused, naming the keys
    round_00/eval/            the starting policy on the validation seeds
    round_<r>/data/           the round's rollouts, a dataset like any other (demos tagged
                              source=dagger, round=r; failures kept: they hold the states to fix)
    round_<r>/train/          the retrained policy (a training run; ``best`` is its final weights)
    round_<r>/eval/           its validation report
    report.json, report.md, dagger.png
                              success per round and against the expert labels used so far

On-policy distillation is the same loop with a teacher policy as the labeller (``DaggerConfig.teacher``, or
the starting run's ``TrainConfig.teacher``): the student drives, and its retraining relabels every state it
visited with the teacher's actions (``vlagym.policies.distill``).

Every phase resumes on its own (collection, training, evaluation), so killing a round and
rerunning the same command loses and duplicates nothing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from vlagym.agents.backends import Backend
from vlagym.core.env_args import env_id_of
from vlagym.core.io import atomic_write_text, read_json
from vlagym.core.splits import SPLIT_SEED_START
from vlagym.dataio.dataset import index_demos
from vlagym.experiments.report import save_figure

DAGGER_SEED_START = 500_000
"""Training-split seeds of the rollouts (round r uses ``DAGGER_SEED_START + (r - 1) * episodes`` on):
clear of the expert demonstrations, which start at 0."""
SETTINGS_FREE = ("workers", "threads", "out", "rounds", "executor", "address")
"""Settings a resumed run may change: speed, where the run lives, and how many rounds to go (a rerun with more
rounds extends the run; with fewer, it reports the rounds asked for)."""


@dataclass
class DaggerConfig:
    """One DAgger run."""

    policy: str
    """The starting policy: a training run folder (its config.yaml gives the recipe and the data)."""
    out: str
    """Folder for the rounds, the aggregated data and the report."""
    rounds: int = 3
    """DAgger rounds after the starting policy."""
    episodes: int = 100
    """Rollouts per round (all kept, successful or not)."""
    beta: float = 0.0
    """Probability that the expert's action is executed at a step in round 1 (0: pure policy rollouts)."""
    beta_decay: float = 0.5
    """Round r mixes with ``beta * beta_decay ** (r - 1)``."""
    intervene_after: int = 0
    """The expert takes over a rollout once the robot has stood still this many steps (the policy
    stalls), so the round also shows the way out (0: pure DAgger, the policy drives throughout)."""
    steps: int = 1500
    """Training steps per round, from the previous round's weights."""
    lr: float = 1e-4
    """Peak learning rate of each round's fine-tuning (warm-up, then cosine decay)."""
    eval_episodes: int = 50
    """Validation episodes per round."""
    env: str | None = None
    """Env id (default: the one the policy was trained on)."""
    workers: int = 1
    """Worker processes for rollouts and evaluation."""
    executor: Literal["local", "ray"] = "local"
    """Where the rollout and evaluation workers run: local processes, or Ray actors (the data are the same)."""
    address: str | None = None
    """With ``executor=ray``: the cluster's address (HOST:PORT, ray://HOST:10001 or auto); none starts a
    single-node cluster here. ``out`` must be on a filesystem every node sees."""
    threads: int = 0
    """Torch threads for training (0: the training default)."""
    teacher: str | None = None
    """On-policy distillation: each round's retraining labels every window, the student's rollouts included,
    with this saved policy's actions (``TrainConfig.teacher``) instead of the expert's. Default: the starting
    run's own teacher, when it was a distillation run (``vlagym compress --method distill`` writes one in
    OUT/train)."""

    def __post_init__(self) -> None:
        for name in ("rounds", "episodes", "steps", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.beta <= 1.0 or not 0.0 <= self.beta_decay <= 1.0:
            raise ValueError(f"beta and beta_decay must lie in [0, 1], got {self.beta} and {self.beta_decay}")
        Backend(self.executor, self.address)

    def beta_at(self, r: int) -> float:
        return self.beta * self.beta_decay ** (r - 1)


def base_train_config(run: str | Path):
    """The starting run's TrainConfig (from its config.yaml)."""
    from vlagym.policies.train import TrainConfig

    path = Path(run) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{run} is not a training run folder (no config.yaml); DAgger starts from one, "
                                f"since it retrains with the run's recipe and data")
    raw = yaml.safe_load(path.read_text())
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in raw.items() if k in names})


def _check_settings(out: Path, cfg: DaggerConfig) -> None:
    from vlagym.core.resume import check_same_settings

    path = out / "dagger.json"
    wanted = {k: v for k, v in asdict(cfg).items() if k not in SETTINGS_FREE}
    if path.exists():
        stored = read_json(path)
        defaults = {f.name: f.default for f in dataclasses.fields(DaggerConfig)}
        # A setting added after the run started, left at its default, is the behaviour the run had.
        wanted_now = {k: v for k, v in wanted.items() if k in stored or v != defaults.get(k)}
        check_same_settings(out, stored, json.loads(json.dumps(wanted_now)),
                            "use another --out, or the same settings to resume")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(wanted, indent=2))


def _frames(folders: list[str]) -> int:
    return int(sum(ref.length for folder in folders for ref in index_demos(folder)))


def dagger(cfg: DaggerConfig) -> dict[str, Any]:
    """Run (or resume) the rounds; returns the report (also written to ``out``)."""
    from vlagym.agents.collect import CollectConfig, collect
    from vlagym.agents.policy_agent import policy_env_kwargs
    from vlagym.core.provenance import provenance
    from vlagym.experiments.evaluate import evaluate
    from vlagym.policies.train import train

    Backend(cfg.executor, cfg.address).check()
    out = Path(cfg.out)
    base = base_train_config(cfg.policy)
    if base.labels != "expert_actions":
        print(f"dagger: training on expert_actions (the starting run used {base.labels}): DAgger's rollouts "
              f"store the policy's actions as `actions`, the expert's labels as `expert_actions`", file=sys.stderr)
    start_policy = str(Path(cfg.policy) / "best")
    env_kwargs = policy_env_kwargs(start_policy)
    env_id = cfg.env or base.eval_env or env_id_of(read_json(Path(start_policy) / "env_args.json"))
    _check_settings(out, cfg)
    t0 = time.time()
    base_data = [str(d) for d in base.data]
    rows = [_evaluate_round(out / "round_00", start_policy, env_id, cfg, evaluate)]
    rows[0].update(round=0, beta=None, rollouts=0, labels=_frames(base_data))
    data, policy = list(base_data), start_policy
    for r in range(1, cfg.rounds + 1):
        folder = out / f"round_{r:02d}"
        print(f"dagger: round {r}/{cfg.rounds} (beta {cfg.beta_at(r):.3g}), policy {policy}", file=sys.stderr)
        collect(CollectConfig(env=env_id, episodes=cfg.episodes, out=str(folder / "data"), workers=cfg.workers,
                              executor=cfg.executor, address=cfg.address,
                              seed_start=DAGGER_SEED_START + (r - 1) * cfg.episodes, env_kwargs=env_kwargs,
                              driver=policy, beta=cfg.beta_at(r), keep_failures=True,
                              intervene_after=cfg.intervene_after,
                              tags={"round": r}))
        data.append(str(folder / "data"))
        run = folder / "train"
        tcfg = dataclasses.replace(base, data=list(data), out=str(run), steps=cfg.steps, lr=cfg.lr,
                                   warmup_steps=min(base.warmup_steps, cfg.steps // 10), eval_every=0,
                                   labels="expert_actions", init_from=policy, teacher=cfg.teacher or base.teacher,
                                   threads=cfg.threads or base.threads, seed=base.seed + r)
        train(tcfg, resume=(run / "config.yaml").exists())
        policy = str(run / "best")
        row = _evaluate_round(folder, policy, env_id, cfg, evaluate)
        rollouts = index_demos(folder / "data")
        row.update(round=r, beta=cfg.beta_at(r), rollouts=len(rollouts),
                   rollout_success=sum(ref.success for ref in rollouts) / max(1, len(rollouts)),
                   labels=_frames(data))
        rows.append(row)
    report = {**provenance(), "job": "dagger", "config": asdict(cfg), "env": env_id, "base_data": base_data,
              "rounds": rows, "final_policy": policy, "wall_time_s": round(time.time() - t0, 1)}
    write_dagger_report(report, out)
    return report


def _evaluate_round(folder: Path, policy: str, env_id: str, cfg: DaggerConfig, evaluate) -> dict[str, Any]:
    rep = evaluate(policy, [env_id], cfg.eval_episodes, seed_start=SPLIT_SEED_START["val"], workers=cfg.workers,
                   executor=cfg.executor, address=cfg.address, expert=False, out=str(folder / "eval"), split="val")
    overall = rep["agents"]["policy"]["overall"]
    return {"policy": policy, "success_rate": overall["success_rate"], "ci95": overall["success_ci95"],
            "episodes": overall["episodes"]}


def write_dagger_report(report: dict[str, Any], out: Path) -> None:
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    lines = [f"# DAgger on {report['env']}", "",
             f"starting policy `{report['config']['policy']}`, {report['config']['episodes']} rollouts per round, "
             f"{report['config']['steps']} training steps per round; success on "
             f"{report['rounds'][0]['episodes']} validation seeds", "",
             "| round | beta | rollouts (their success) | expert labels so far | success | 95% CI |",
             "|---:|---:|---|---:|---:|---|"]
    for row in report["rounds"]:
        beta = "-" if row["beta"] is None else f"{row['beta']:.3g}"
        rollouts = (f"{row['rollouts']} ({row['rollout_success']:.0%})" if row["rollouts"] else "-")
        lo, hi = row["ci95"]
        lines.append(f"| {row['round']} | {beta} | {rollouts} | {row['labels']} | {row['success_rate']:.1%} | "
                     f"[{lo:.1%}, {hi:.1%}] |")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    plot_dagger(report, out / "dagger.png")


def plot_dagger(report: dict[str, Any], path: Path) -> None:
    """Validation success (with its interval) against the expert labels used, one point per round."""
    plot_dagger_runs({"DAgger": report}, path, f"DAgger on {report['env'].split('/')[-1]}")


def plot_dagger_runs(reports: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Several DAgger runs' curves (``report.json`` contents by legend label) on one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, report) in enumerate(reports.items()):
        rows = report["rounds"]
        x = [row["labels"] for row in rows]
        y = [100 * row["success_rate"] for row in rows]
        err = [[100 * (row["success_rate"] - row["ci95"][0]) for row in rows],
               [100 * (row["ci95"][1] - row["success_rate"]) for row in rows]]
        line = ax.errorbar([xi * (1 + 0.004 * i) for xi in x], y, yerr=err, marker="o", capsize=3, label=label)
        for row, xi, yi in zip(rows, x, y):
            ax.annotate(f"r{row['round']}", (xi, yi), textcoords="offset points", xytext=(4, -12), fontsize=7,
                        color=line[0].get_color())
    ax.set_xlabel("expert-labelled frames in the training data")
    ax.set_ylabel("validation success (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title or "DAgger")
    ax.grid(alpha=0.3)
    if len(reports) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=120)
