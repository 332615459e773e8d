"""Commands that train policies: train, pipeline, data-efficiency, dagger, dagger-plot."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vlagym.experiments.commands.args import (
    COUNT,
    Command,
    Flag,
    add_config,
    env_ids,
    honour_trust_pickle,
    labelled_runs,
    plot_args,
    policy_name,
    trust_pickle_flag,
)


# --- train --------------------------------------------------------------------------------------------------
def _train_args(s) -> None:
    from vlagym.policies.train import OVERRIDE_PREFIXES, TrainConfig

    add_config(s, TrainConfig, prefixes=OVERRIDE_PREFIXES)
    s.add_argument("--resume", action="store_true", help="continue the run in out= from its last checkpoint")
    s.add_argument("--nproc", type=COUNT, default=1, metavar="N",
                   help="train data-parallel in N processes on this machine (torchrun --standalone; gloo on CPU, "
                        "NCCL on GPU): each takes batch_size/N of every step's batch. For several nodes run torchrun "
                        "yourself (docs/cluster.md)")
    trust_pickle_flag(s, "--resume to unpickle a checkpoint that torch.load(weights_only=True) refuses (old format)")
    s.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from vlagym.agents.evaluation import validation_success
    from vlagym.policies.train import TrainConfig, train

    honour_trust_pickle(args)
    cfg = TrainConfig(**args.config_values)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # relaunch as N ranks; each one lands below
        if cfg.batch_size % args.nproc:
            raise ValueError(f"batch_size {cfg.batch_size} does not split over --nproc {args.nproc}: the global batch "
                             "must be a multiple of the process count")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.nproc),
               "-m", "vlagym.experiments.cli", *_without_nproc(args.argv)]
        os.execv(sys.executable, cmd)  # torchrun in this process's place: a signal to it reaches the ranks
    summary = train(cfg, resume=args.resume, validate=validation_success)
    if int(os.environ.get("RANK", 0)) != 0:
        return 0
    if summary["best"]["step"] is None:
        print(f"no validation ran; final policy: {summary['best_policy']}; run folder {summary['run']}")
    else:
        print(f"best policy: {summary['best_policy']} (validation success {summary['best']['success_rate']:.0%} "
              f"at step {summary['best']['step']}); run folder {summary['run']}")
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less ``--nproc N`` (torchrun would read it as its own abbreviated ``--nproc-per-node``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


# --- pipeline -----------------------------------------------------------------------------------------------
def _pipeline_args(s) -> None:
    from vlagym.experiments.pipeline import PipelineConfig

    s.add_argument("--quick", action="store_true",
                   help="a first look in about three minutes (smaller defaults: PipelineConfig.quick)")
    add_config(s, PipelineConfig, flags={
        "train_env": Flag(aliases=("--env",)), "policy": Flag(type=policy_name),
        "eval_episodes": Flag(type=COUNT), "workers": Flag(type=COUNT)})
    s.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args) -> int:
    from vlagym.experiments.pipeline import PipelineConfig, run_pipeline

    base = PipelineConfig.quick if args.quick else PipelineConfig
    overrides = dict(args.config_explicit)  # what the user set; the rest is the base's (quick's smaller sizes)
    if "train_env" in overrides:
        overrides["train_env"] = env_ids([overrides["train_env"]])[0]
    report = run_pipeline(base(**overrides))
    print(Path(report["paths"]["report_md"]).read_text())
    print(f"report: {report['paths']['report_json']} and {report['paths']['report_md']}")
    print(f"videos: {report['paths']['videos']}/")
    return 0


# --- data-efficiency ----------------------------------------------------------------------------------------
def _data_efficiency_args(s) -> None:
    from vlagym.experiments.efficiency import EfficiencyConfig

    # --config and the positional key=value are the *training* config's (as for vlagym train); the command's
    # own settings file is --settings, their key=value form --set.
    add_config(s, EfficiencyConfig, flags={"overrides": Flag(positional=True), "episodes": Flag(type=COUNT),
                                           "workers": Flag(type=COUNT)}, overrides=False, config_flag="--settings")
    s.set_defaults(func=cmd_data_efficiency)


def cmd_data_efficiency(args) -> int:
    from vlagym.experiments.efficiency import run_efficiency, to_markdown

    summary = run_efficiency(args.config, args.overrides, args.demos, args.episodes, args.out,
                             seed_start=args.seed_start, workers=args.workers)
    print(to_markdown(summary))
    print(f"plot: {Path(args.out) / 'efficiency.png'}; table: {Path(args.out) / 'efficiency.md'}")
    return 0


# --- dagger -------------------------------------------------------------------------------------------------
def _dagger_args(s) -> None:
    from vlagym.experiments.dagger import DaggerConfig

    add_config(s, DaggerConfig)
    s.set_defaults(func=cmd_dagger)


def cmd_dagger(args) -> int:
    from vlagym.experiments.dagger import DaggerConfig, dagger

    cfg = DaggerConfig(**args.config_values)
    if cfg.env is not None:
        cfg.env = env_ids([cfg.env])[0]
    report = dagger(cfg)
    print((Path(cfg.out) / "report.md").read_text())
    print(f"report: {Path(cfg.out) / 'report.json'}; plot: {Path(cfg.out) / 'dagger.png'}; "
          f"final policy: {report['final_policy']}")
    return 0


def cmd_dagger_plot(args) -> int:
    from vlagym.core.io import read_json
    from vlagym.experiments.dagger import plot_dagger_runs

    reports = {}
    for label, run in labelled_runs(args.runs, args.labels):
        path = Path(run) / "report.json"
        if not path.exists():
            raise FileNotFoundError(f"{run} holds no DAgger report.json (a run writes it when its last round ends)")
        reports[label] = read_json(path)
    print(plot_dagger_runs(reports, args.out, args.title))
    return 0


COMMANDS = [
    Command("pipeline", "the main job: demos, training, evaluation, videos, report",
            "Run the whole pipeline on its embedded default: collect expert demonstrations, train a policy, "
            "evaluate it beside the expert on test seeds, record videos (one expert episode per task too) and "
            "write the report. About 11 minutes on 2 CPU cores; --quick takes about 3. Rerun to resume.",
            _pipeline_args),
    Command("train", "behavior cloning from a YAML config",
            "Train a registered policy (built in: rt1, bcz, clip) on demonstration datasets. Settings come from "
            "--config (experiments/configs/*.yaml), flags and key=value overrides, e.g. steps=500 data=[runs/data] "
            "policy.horizon=5. The resolved config, TensorBoard logs, a resumable checkpoint/ and the best/ "
            "policy go in out=.", _train_args),
    Command("data-efficiency", "success against the number of demonstrations",
            "Train the same config on the first N demos for each N, evaluate each best checkpoint on the same "
            "test seeds, and plot success (95% Wilson CI) against N. Rerunning resumes.", _data_efficiency_args),
    Command("dagger", "interactive imitation: roll out, expert-label, retrain",
            "DAgger from a trained policy: each round rolls out the policy (mixed with the expert at rate beta), "
            "labels every visited state with the scripted expert's plan, retrains on all the data from the "
            "previous weights and evaluates on validation seeds. Rerun the same command to resume.", _dagger_args),
    Command("dagger-plot", "several dagger runs' curves on one plot",
            "Overlay the success-against-expert-labels curves (with 95% Wilson intervals) of several "
            "`vlagym dagger` runs.", plot_args(cmd_dagger_plot)),
]

