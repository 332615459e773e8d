"""Commands that measure policies: eval, suite-compare, regress."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlagym.core.splits import TEST_SEED_START
from vlagym.experiments.commands.args import (
    COUNT,
    FORMATTER,
    Command,
    Flag,
    add_config,
    env_ids,
    honour_trust_pickle,
    trust_pickle_flag,
)


@dataclass
class EvalConfig:
    """Settings of ``vlagym eval``."""

    policy: str | None = None
    """Policy folder or training run folder (uses best/), or an SB3 model .zip or `vlagym rl` run folder;
    required unless --suite."""
    env: list[str] | None = None
    """Env ids (default: the one the policy was trained on, from its env_args.json)."""
    episodes: int = 100
    """Episodes per env."""
    seed_start: int = TEST_SEED_START
    """First seed (test split)."""
    workers: int | None = None
    """Worker processes (default: all cores)."""
    video: str | None = None
    """Folder for MP4s of the first episodes and a grid video."""
    videos: int = 4
    """Episodes per env and agent recorded."""
    gif: bool = False
    """Write per-episode GIFs instead of MP4s."""
    expert: bool = True
    """Run the expert row beside the policy (--no-expert skips it)."""
    out: str | None = None
    """Folder for report.json and report.md."""
    suite: Literal["generalization", "robustness"] | None = None
    """Evaluate on every generalization level or every perturbation and strength."""
    levels: list[str] | None = None
    """Levels for --suite generalization (default L1-L5)."""
    perturbations: list[str] | None = None
    """Perturbations for --suite robustness (default: all)."""
    strengths: list[float] | None = None
    """Strengths for --suite robustness besides 0 (default 0.25 0.5 1)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Env keyword arguments, e.g. level=L1, on top of those the policy was trained with (one that changes what
    it sees or does, such as another image_size, is refused)."""
    split: Literal["test", "val"] = "test"
    """Seed split every seed must lie in (val from 1,000,000; test from 2,000,000)."""
    backend: Literal["torch", "onnxruntime"] = "torch"
    """What runs the policy's network: torch, or onnxruntime (a float policy folder is exported to ONNX once,
    into OUT/onnx/; an ONNX-compressed folder from vlagym compress runs as is)."""
    latency: float | str = 0.0
    """Milliseconds each policy decision takes, or 'measured' (its own compute time): the env keeps executing
    the previous action for ceil(latency x control rate) steps meanwhile (0: none)."""
    executor: Literal["local", "ray"] = "local"
    """Where the episodes' workers run: local processes, or Ray actors on a cluster (the report is the same)."""
    address: str | None = None
    """With --executor ray: the cluster's address (HOST:PORT, ray://HOST:10001 or auto); none starts a single-node
    cluster here. Policy folders and --out must be on a filesystem every node sees."""


# --- eval ---------------------------------------------------------------------------------------------------
def _eval_args(s) -> None:
    add_config(s, EvalConfig, flags={"episodes": Flag(type=COUNT), "workers": Flag(type=COUNT),
                                     "env_kwargs": Flag(aliases=("--kwargs",)),
                                     "latency": Flag(type=latency_ms, metavar="{0,measured,MS}"),
                                     "address": Flag(metavar="HOST:PORT")}, overrides=False)
    trust_pickle_flag(s, "unpickling an SB3 --policy zip that cannot be loaded safely")
    s.set_defaults(func=cmd_eval)


def latency_ms(text: str) -> float | str:
    """A ``Flag.type``: ``--latency`` as milliseconds or 'measured'."""
    from vlagym.agents.latency import check_latency

    try:
        return check_latency(text) or 0.0
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _eval_env_ids(args) -> list[str]:
    """``--env``, or the env the policy was trained on."""
    if args.env:
        return env_ids(args.env)
    if not args.policy:
        raise ValueError("--env is needed when there is no --policy to read it from")
    from vlagym.agents.policy_agent import policy_env_args

    env_id, _, _ = policy_env_args(args.policy)
    if env_id is None:
        raise ValueError(f"{args.policy} records no env (no env_args.json beside it); pass --env")
    return [env_id]


def cmd_eval(args) -> int:
    honour_trust_pickle(args)
    args.env = _eval_env_ids(args)
    if args.suite:
        from vlagym.experiments.suites import run_suite, to_markdown

        if args.backend != "torch" or args.latency:
            raise ValueError("--backend and --latency apply to a plain eval, not to --suite")
        report = run_suite(args.suite, args.policy, env_ids(args.env), args.episodes, seed_start=args.seed_start,
                           workers=args.workers, expert=args.expert, out=args.out, levels=args.levels,
                           perturbations=args.perturbations, strengths=args.strengths,
                           env_kwargs=args.env_kwargs, executor=args.executor, address=args.address)
        print(to_markdown(report))
        if "paths" in report:
            print(f"report: {report['paths']['report_json']}; plot: {report['paths']['plot']}")
        return 0
    if not args.policy:
        raise ValueError("eval needs --policy (only --suite runs the expert alone)")
    from vlagym.experiments.evaluate import evaluate

    report = evaluate(args.policy, env_ids(args.env), args.episodes, seed_start=args.seed_start,
                      workers=args.workers, video_dir=args.video, videos_per_env=args.videos,
                      expert=args.expert, out=args.out, gif=args.gif, env_kwargs=args.env_kwargs,
                      split=args.split, backend=args.backend, latency=args.latency, executor=args.executor,
                      address=args.address)
    from vlagym.experiments.report import to_markdown

    print(to_markdown(report))
    if "paths" in report:
        print(f"report: {report['paths']['report_json']}")
    if args.video:
        print(f"videos: {args.video}/")
    return 0


# --- suite-compare ------------------------------------------------------------------------------------------
def _suite_compare_args(s) -> None:
    from vlagym.experiments.suites import SuiteCompareConfig

    add_config(s, SuiteCompareConfig, flags={"reports": Flag(positional=True)}, overrides=False)
    s.set_defaults(func=cmd_suite_compare)


def cmd_suite_compare(args) -> int:
    from vlagym.experiments.suites import compare_suites, comparison_markdown, load_suite_report, write_comparison

    labels = args.labels or [Path(r).name for r in args.reports]
    comparison = compare_suites([load_suite_report(r) for r in args.reports], labels)
    paths = write_comparison(comparison, args.out)
    print(comparison_markdown(comparison))
    print(f"comparison: {paths['md']}, {paths['json']}; plot: {paths['plot']}")
    return 0


# --- regress ------------------------------------------------------------------------------------------------
def _regress_args(s) -> None:
    from vlagym import testing

    rsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions = [("record-golden", "record a golden rollout file", testing.RecordGoldenConfig,
                {"env_kwargs": Flag(aliases=("--kwargs",))}),
               ("check-golden", "replay golden files; exit 1 on drift", testing.CheckGoldenConfig,
                {"files": Flag(positional=True)}),
               ("compare", "compare two eval reports task by task", testing.CompareConfig, {}),
               ("check", "evaluate a policy against a success bar", testing.RegressCheckConfig,
                {"episodes": Flag(type=COUNT), "workers": Flag(type=COUNT), "env_kwargs": Flag(aliases=("--kwargs",))})]
    for name, text, cls, flags in actions:
        r = rsub.add_parser(name, formatter_class=FORMATTER, help=text, description=text)
        add_config(r, cls, flags=flags, overrides=False)
    s.set_defaults(func=cmd_regress)


def cmd_regress(args) -> int:
    from vlagym import testing

    if args.action == "record-golden":
        env_id = env_ids([args.env])[0]
        kwargs = {"image_size": args.image_size, **args.env_kwargs}
        testing.record_golden(env_id, args.seeds, args.steps, args.out, env_kwargs=kwargs)
        print(f"golden rollout of {env_id} (seeds {args.seeds}, {args.steps} steps) -> {args.out}")
        return 0
    if args.action == "check-golden":
        failed = 0
        for path in args.files:
            try:
                testing.check_golden(path)
                print(f"ok     {path}")
            except testing.EnvContractError as e:
                failed += 1
                print(f"DRIFT  {e}")
        return 1 if failed else 0
    if args.action == "compare":
        reports = [json.loads(Path(p).read_text()) for p in (args.baseline, args.candidate)]
        try:
            result = testing.compare_reports(*reports, alpha=args.alpha, agent=args.agent,
                                             allow_version_mismatch=args.allow_version_mismatch)
        except testing.ReportMismatch as e:
            print(f"vlagym regress compare: refused: {e}", file=sys.stderr)
            return 2
        print(result.table())
        if result.regressed:
            print(f"regressed: {', '.join(result.regressed)}")
            return 1
        print("no task regressed")
        return 0
    from vlagym.core.stats import wilson_interval
    from vlagym.experiments.evaluate import evaluate

    env_id = env_ids([args.env])[0]
    report = evaluate(args.policy, [env_id], args.episodes, seed_start=args.seed_start, workers=args.workers,
                      expert=False, env_kwargs=args.env_kwargs)
    s = report["agents"]["policy"]["per_task"][env_id]
    low = wilson_interval(s["successes"], s["episodes"])[0]
    verdict = "ok" if low >= args.min_success else "FAIL"
    print(f"{verdict}: {env_id} success {s['successes']}/{s['episodes']}, 95% Wilson lower bound {low:.3f} "
          f"{'>=' if low >= args.min_success else '<'} --min-success {args.min_success}")
    return 0 if low >= args.min_success else 1


COMMANDS = [
    Command("eval", "evaluate a policy beside the expert",
            "Roll out a trained policy and the scripted expert on the same held-out test seeds in worker "
            "processes; write report.json/report.md and videos. --suite generalization runs every level L1-L5 a "
            "task defines (each on its own test seeds); --suite robustness runs every visual perturbation at each "
            "--strengths (same seeds, level L1); both write a PNG plot beside the report.", _eval_args),
    Command("suite-compare", "several policies' suite results side by side",
            "Put the reports of `vlagym eval --suite` for several policies in one table and one bar plot (with "
            "95% Wilson intervals), condition by condition, e.g. a policy trained with and without visual "
            "randomization. Shared conditions must have been run on the same seeds.", _suite_compare_args),
    Command("regress", "regression checks (golden rollouts, reports, policies)",
            "'record-golden'/'check-golden': pin and replay a fixed-action rollout as per-step observation "
            "hashes. 'compare': per-task one-sided Fisher exact test of a candidate report against a baseline "
            "(exit 1 on regression, 2 if the reports cannot be compared). 'check': evaluate a policy and exit 1 "
            "when the 95% Wilson lower bound of its success is below --min-success.", _regress_args),
]
