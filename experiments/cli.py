"""The ``vlagym`` command line: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vlagym.experiments.pipeline import TEST_SEED_START, PipelineConfig


def _env_ids(values: list[str] | None) -> list[str]:
    from vlagym.envs import ENV_IDS, check_env_id

    if not values or values == ["all"]:
        return list(ENV_IDS)
    return [check_env_id(v) for v in values]


def _kwargs(items: list[str] | None) -> dict:
    """``key=value`` pairs (values parsed as YAML) for gym.make."""
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--kwargs takes key=value pairs, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


# --- subcommands ----------------------------------------------------------------------------------------------
def cmd_pipeline(args) -> int:
    from vlagym.experiments.pipeline import run_pipeline

    base = PipelineConfig.quick if args.quick else PipelineConfig
    overrides = {k: v for k, v in {"out": args.out, "demos": args.demos, "train_steps": args.train_steps,
                                   "eval_episodes": args.eval_episodes, "policy": args.policy,
                                   "workers": args.workers}.items() if v is not None}
    if args.env:
        overrides["train_env"] = _env_ids([args.env])[0]
    report = run_pipeline(base(**overrides))
    print(Path(report["paths"]["report_md"]).read_text())
    print(f"report: {report['paths']['report_json']} and {report['paths']['report_md']}")
    print(f"videos: {report['paths']['videos']}/")
    return 0


def cmd_expert_eval(args) -> int:
    from vlagym.agents.rollout import Job, run_jobs
    from vlagym.experiments.report import build_report, to_markdown, write_report

    env_ids = _env_ids(args.env)
    extra = _kwargs(args.kwargs)
    kwargs = tuple(sorted({**({} if args.render else {"obs_mode": "state"}), **extra}.items()))
    seeds = {e: list(range(args.seed_start, args.seed_start + args.episodes)) for e in env_ids}
    jobs = [Job(e, s, noise=args.noise, env_kwargs=kwargs) for e in env_ids for s in seeds[e]]
    episodes = run_jobs(jobs, workers=args.workers, desc="expert-eval")
    report = build_report({"expert": episodes}, seeds, job="expert-eval", noise=args.noise, env_kwargs=extra)
    print(to_markdown(report))
    if args.out:
        json_path, _ = write_report(report, args.out)
        print(f"report: {json_path}")
    rate = report["agents"]["expert"]["overall"]["success_rate"]
    return 0 if rate >= args.min_success else 1


def cmd_record(args) -> int:
    import gymnasium as gym

    from vlagym.agents.rollout import run_episode, video_kwargs
    from vlagym.agents.video import write_video

    env_id = _env_ids([args.env])[0]
    kwargs = {"image_size": args.image_size, **video_kwargs(env_id)}
    if args.policy:
        from vlagym.agents.policy_agent import PolicyAgent, policy_env_kwargs

        agent = PolicyAgent.load(args.policy)
        kwargs.update(policy_env_kwargs(args.policy))  # the env the policy was trained on
        make_agent = lambda e: agent  # noqa: E731
    else:
        make_agent = lambda e: e.unwrapped.task.expert(noise=args.noise)  # noqa: E731
    env = gym.make(env_id, **kwargs)
    ep = run_episode(env, args.seed, make_agent, record=True)
    path = write_video(args.out, ep.frames)
    who = args.policy or "expert"
    print(f"{who} on {ep.instruction!r}: {'success' if ep.success else 'failure'} in {ep.steps} steps -> {path}")
    return 0


def cmd_bench(args) -> int:
    from vlagym.experiments.bench import bench_env, format_env_rows

    if args.what == "env":
        rows = bench_env(_env_ids(args.env), sizes=args.sizes, steps=args.steps)
        print(format_env_rows(rows))
    elif args.what == "policy":
        from vlagym.experiments.bench import bench_policy, format_policy_rows

        env_id = _env_ids(args.env)[0] if args.env else "vlagym/TabletopTouch-v0"
        rows = bench_policy(env_id=env_id, image_size=max(args.sizes), batch_size=args.batch_size)
        print(format_policy_rows(rows))
    else:
        from vlagym.experiments.bench import bench_data

        if not args.data:
            raise ValueError("bench data needs --data DIR (a dataset from `vlagym collect`)")
        rows = bench_data(args.data, workers=args.workers, batch_size=args.batch_size, seconds=args.seconds)
        for r in rows:
            print(f"history={r['history']:2d} horizon={r['horizon']:2d} augment={str(r['augment']):5s}: "
                  f"{r['samples_per_s']:.0f} samples/s ({r['workers']} workers, batch {r['batch_size']}); "
                  f"{r['bytes_per_frame'] / 1024:.1f} KiB per frame on disk")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def cmd_collect(args) -> int:
    from vlagym.agents.collect import CollectConfig, collect

    kwargs = {"image_size": args.image_size, **_kwargs(args.kwargs)}
    if args.wrist_camera:
        kwargs["wrist_camera"] = True
    cfg = CollectConfig(env=_env_ids([args.env])[0], episodes=args.episodes, out=args.out, workers=args.workers,
                        split=args.split, seed_start=args.seed_start, noise=args.noise, env_kwargs=kwargs,
                        shard_size=args.shard_size, level=args.level)
    m = collect(cfg)
    print(f"{m['episodes']} episodes ({m['frames']} frames, {m['dropped_failures']} failures dropped) "
          f"in {args.out}; seeds {m['seed_range'][0]}..{m['seed_range'][1]} ({m['split']})")
    return 0


def cmd_dataset(args) -> int:
    from vlagym.agents.dataset import index_demos, read_manifest, shard_paths

    refs = index_demos(args.path)
    if args.action == "info":
        import numpy as np

        from vlagym.agents.dataset import compute_stats

        manifest = read_manifest(args.path)
        words = sorted({w for r in refs for w in r.instruction.replace(",", " ").split()})
        size = sum(p.stat().st_size for p in shard_paths(args.path))
        frames = sum(r.length for r in refs)
        stats = compute_stats(refs)["actions"]
        print(f"dataset      {args.path}")
        print(f"env          {manifest['env_args']['env_name']}  split={manifest['split']}  "
              f"noise={manifest['noise']}")
        print(f"episodes     {len(refs)}  (dropped failures: {manifest['dropped_failures']})")
        print(f"frames       {frames}  (mean length {frames / len(refs):.1f})")
        print("success      100% (only successful expert episodes are kept)")
        print(f"instructions {len({r.instruction for r in refs})} distinct; vocabulary {len(words)} words:")
        print("             " + " ".join(words))
        print("actions      mean " + np.array2string(np.array(stats["mean"]), precision=3))
        print("             std  " + np.array2string(np.array(stats["std"]), precision=3))
        print("             min  " + np.array2string(np.array(stats["min"]), precision=3))
        print("             max  " + np.array2string(np.array(stats["max"]), precision=3))
        print(f"size on disk {size / 2**20:.1f} MiB ({size / max(frames, 1) / 1024:.1f} KiB per frame)")
        return 0
    from vlagym.agents.dataset import load_demo
    from vlagym.agents.video import annotate, write_video

    if not 0 <= args.episode < len(refs):
        raise ValueError(f"episode {args.episode} out of range: the dataset has {len(refs)} episodes")
    demo = load_demo(refs[args.episode])
    frames = [annotate(f, refs[args.episode].instruction, t) for t, f in enumerate(demo["obs"][args.key])]
    path = write_video(args.out, frames)
    print(f"episode {args.episode} (seed {refs[args.episode].seed}, {len(frames)} frames) -> {path}")
    return 0


def cmd_train(args) -> int:
    from vlagym.policies.train import load_config, train

    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, resume=args.resume)
    print(f"best policy: {summary['best_policy']} (validation success {summary['best']['success_rate']:.0%} "
          f"at step {summary['best']['step']}); run folder {summary['run']}")
    return 0


def cmd_eval(args) -> int:
    if args.suite:
        from vlagym.experiments.suites import run_suite, to_markdown

        report = run_suite(args.suite, args.policy, _env_ids(args.env), args.episodes, seed_start=args.seed_start,
                           workers=args.workers, expert=not args.no_expert, out=args.out, levels=args.levels,
                           perturbations=args.perturbations, strengths=args.strengths,
                           env_kwargs=_kwargs(args.kwargs))
        print(to_markdown(report))
        if "paths" in report:
            print(f"report: {report['paths']['report_json']}; plot: {report['paths']['plot']}")
        return 0
    if not args.policy:
        raise ValueError("eval needs --policy (only --suite runs the expert alone)")
    from vlagym.experiments.evaluate import evaluate

    report = evaluate(args.policy, _env_ids(args.env), args.episodes, seed_start=args.seed_start,
                      workers=args.workers, video_dir=args.video, videos_per_env=args.videos,
                      expert=not args.no_expert, out=args.out, gif=args.gif)
    from vlagym.experiments.report import to_markdown

    print(to_markdown(report))
    if "paths" in report:
        print(f"report: {report['paths']['report_json']}")
    if args.video:
        print(f"videos: {args.video}/")
    return 0


def cmd_envs(args) -> int:
    import gymnasium as gym

    for env_id in _env_ids(None):
        spec = gym.spec(env_id)
        print(f"{env_id:32s} max_episode_steps={spec.max_episode_steps} kwargs={spec.kwargs}")
    return 0


def cmd_regress(args) -> int:
    from vlagym import testing

    if args.action == "record-golden":
        env_id = _env_ids([args.env])[0]
        kwargs = {"image_size": args.image_size, **_kwargs(args.kwargs)}
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
    from vlagym.agents.stats import wilson_interval
    from vlagym.experiments.evaluate import evaluate

    env_id = _env_ids([args.env])[0]
    report = evaluate(args.policy, [env_id], args.episodes, seed_start=args.seed_start, workers=args.workers,
                      expert=False)
    s = report["agents"]["policy"]["per_task"][env_id]
    low = wilson_interval(s["successes"], s["episodes"])[0]
    verdict = "ok" if low >= args.min_success else "FAIL"
    print(f"{verdict}: {env_id} success {s['successes']}/{s['episodes']}, 95% Wilson lower bound {low:.3f} "
          f"{'>=' if low >= args.min_success else '<'} --min-success {args.min_success}")
    return 0 if low >= args.min_success else 1


# --- parser -----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vlagym",
        description="Language-conditioned robot learning in simulation: environments, experts, policies.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    s = sub.add_parser("pipeline", formatter_class=fmt,
                       help="the main job: demos, training, evaluation, videos, report",
                       description="Run the whole pipeline on its embedded default: collect expert "
                                   "demonstrations, train a policy, evaluate it beside the expert on test seeds, "
                                   "record videos (one expert episode per task too) and write the report. "
                                   "About 20 minutes on 2 CPU cores; --quick takes about 3. Rerun to resume.")
    s.add_argument("--quick", action="store_true", help="a first look in about three minutes")
    s.add_argument("--out", default=None, help="output folder (default runs/main)")
    s.add_argument("--env", default=None, help="training task (default vlagym/TabletopTouch-v0)")
    s.add_argument("--policy", choices=["clip", "bcz", "rt1"], default=None, help="policy (default clip)")
    s.add_argument("--demos", type=int, default=None, help="expert demonstrations (default 100; quick 20)")
    s.add_argument("--train-steps", type=int, default=None, help="training steps (default 1200; quick 150)")
    s.add_argument("--eval-episodes", type=int, default=None, help="test episodes (default 50; quick 6)")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    s.set_defaults(func=cmd_pipeline)

    s = sub.add_parser("expert-eval", formatter_class=fmt, help="measure the scripted experts' success",
                       description="Run each task's scripted expert on consecutive seeds and report success "
                                   "with 95%% Wilson intervals. Exits 1 if overall success < --min-success.")
    s.add_argument("--env", nargs="+", default=None, help="env ids, or 'all'")
    s.add_argument("--episodes", type=int, default=200, help="episodes per env")
    s.add_argument("--seed-start", type=int, default=TEST_SEED_START, help="first seed")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    s.add_argument("--noise", type=float, default=0.0, help="std of Gaussian action noise (normalised units)")
    s.add_argument("--render", action="store_true", help="render images too (slower; success is the same)")
    s.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE",
                   help="env keyword arguments, e.g. action_mode=continuous")
    s.add_argument("--min-success", type=float, default=0.0, help="fail (exit 1) below this overall rate")
    s.add_argument("--out", default=None, help="folder for report.json and report.md")
    s.set_defaults(func=cmd_expert_eval)

    s = sub.add_parser("record", formatter_class=fmt, help="record one rollout (policy or expert) to MP4 or GIF",
                       description="Roll out a trained policy (--policy) or the scripted expert on one seed and "
                                   "write an annotated video (the suffix picks the format: .mp4 or .gif).")
    s.add_argument("--env", required=True, help="env id, e.g. vlagym/TabletopPickUp-v0")
    s.add_argument("--policy", default=None, help="policy or training run folder (default: the scripted expert)")
    s.add_argument("--seed", type=int, default=TEST_SEED_START, help="episode seed")
    s.add_argument("--noise", type=float, default=0.0, help="expert action noise")
    s.add_argument("--image-size", type=int, default=128, help="camera resolution (a policy's own wins)")
    s.add_argument("--out", default="rollout.mp4", help="output file (.mp4 or .gif)")
    s.set_defaults(func=cmd_record)

    s = sub.add_parser("bench", formatter_class=fmt, help="benchmarks (env, data, policy)",
                       description="Speed benchmarks. 'env': env steps/s with rendering on one core at each "
                                   "size, beside raw PyBullet rendering of the same scene without the robot. "
                                   "'data': loader samples/s over a dataset with worker processes.")
    s.add_argument("what", choices=["env", "data", "policy"],
                   help="what to benchmark ('policy': each policy's default config on one core at the "
                        "largest --sizes: parameters, checkpoint size, ms per act, ms per batch forward)")
    s.add_argument("--data", default=None, help="dataset folder (data)")
    s.add_argument("--workers", type=int, default=2, help="DataLoader workers (data)")
    s.add_argument("--batch-size", type=int, default=32, help="batch size (data)")
    s.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement (data)")
    s.add_argument("--env", nargs="+", default=None, help="env ids (default: all)")
    s.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128], help="image sizes")
    s.add_argument("--steps", type=int, default=200, help="steps per measurement")
    s.add_argument("--json", default=None, help="also write the rows to this JSON file")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("collect", formatter_class=fmt, help="collect expert demonstrations into HDF5",
                       description="Run the scripted expert in worker processes and keep the first N "
                                   "successful episodes in robomimic-layout HDF5 shards, with a manifest "
                                   "and action statistics. Rerun the same command to resume.")
    s.add_argument("--env", required=True, help="env id")
    s.add_argument("--episodes", type=int, required=True, help="successful episodes to keep")
    s.add_argument("--out", required=True, help="dataset folder")
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    s.add_argument("--split", choices=["train", "val", "test"], default="train",
                   help="seed split (train from 0, val from 1e6, test from 2e6)")
    s.add_argument("--seed-start", type=int, default=None, help="first seed (default: the split's start)")
    s.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on expert actions")
    s.add_argument("--image-size", type=int, default=128, help="camera resolution")
    s.add_argument("--wrist-camera", action="store_true", help="also record rgb_wrist")
    s.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE",
                   help="more env keyword arguments, e.g. action_mode=continuous")
    s.add_argument("--shard-size", type=int, default=50, help="episodes per HDF5 shard")
    s.add_argument("--level", choices=["train", "L1", "L2", "L3", "L4", "L5"], default=None,
                   help="generalization level of every episode (the train split takes only 'train'; "
                        "default: the union of all levels)")
    s.set_defaults(func=cmd_collect)

    s = sub.add_parser("dataset", formatter_class=fmt, help="inspect a dataset (info, show)",
                       description="'info': episodes, frames, instructions, action statistics, size. "
                                   "'show': write one episode as a video with its instruction drawn on it.")
    s.add_argument("action", choices=["info", "show"], help="what to do")
    s.add_argument("path", help="dataset folder")
    s.add_argument("--episode", type=int, default=0, help="episode index (show)")
    s.add_argument("--key", default="rgb", help="image key to show")
    s.add_argument("--out", default="episode.mp4", help="video file (show)")
    s.set_defaults(func=cmd_dataset)

    s = sub.add_parser("train", formatter_class=fmt, help="behavior cloning from a YAML config",
                       description="Train a policy (rt1, bcz, clip) on demonstration datasets. Settings come "
                                   "from --config (experiments/configs/*.yaml) and key=value overrides, e.g. "
                                   "steps=500 data=[runs/data] policy.horizon=5. The resolved config, "
                                   "TensorBoard logs, a resumable checkpoint/ and the best/ policy go in out=.")
    s.add_argument("--config", default=None, help="YAML config file")
    s.add_argument("--resume", action="store_true", help="continue the run in out= from its last checkpoint")
    s.add_argument("overrides", nargs="*", help="key=value overrides (policy.<field>=value for the policy)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", formatter_class=fmt, help="evaluate a policy beside the expert",
                       description="Roll out a trained policy and the scripted expert on the same held-out "
                                   "test seeds in worker processes; write report.json/report.md and videos. "
                                   "--suite generalization runs every level L1-L5 a task defines (each on its "
                                   "own test seeds); --suite robustness runs every visual perturbation at each "
                                   "--strengths (same seeds, level L1); both write a PNG plot beside the report.")
    s.add_argument("--policy", default=None,
                   help="policy folder or training run folder (uses best/); required unless --suite")
    s.add_argument("--env", nargs="+", required=True, help="env ids")
    s.add_argument("--episodes", type=int, default=100, help="episodes per env")
    s.add_argument("--seed-start", type=int, default=TEST_SEED_START, help="first seed (test split)")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    s.add_argument("--video", default=None, help="folder for MP4s of the first episodes and a grid video")
    s.add_argument("--videos", type=int, default=4, help="episodes per env and agent recorded")
    s.add_argument("--gif", action="store_true", help="write per-episode GIFs instead of MP4s")
    s.add_argument("--no-expert", action="store_true", help="skip the expert row")
    s.add_argument("--out", default=None, help="folder for report.json and report.md")
    s.add_argument("--suite", choices=["generalization", "robustness"], default=None,
                   help="evaluate on every generalization level or every perturbation and strength")
    s.add_argument("--levels", nargs="+", default=None, help="levels for --suite generalization (default L1-L5)")
    s.add_argument("--perturbations", nargs="+", default=None,
                   help="perturbations for --suite robustness (default: all)")
    s.add_argument("--strengths", nargs="+", type=float, default=None,
                   help="strengths for --suite robustness besides 0 (default 0.25 0.5 1)")
    s.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE",
                   help="env keyword arguments for --suite (e.g. image_size=64 when evaluating the expert alone)")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("regress", formatter_class=fmt, help="regression checks (golden rollouts, reports, policies)",
                       description="'record-golden'/'check-golden': pin and replay a fixed-action rollout as "
                                   "per-step observation hashes. 'compare': per-task one-sided Fisher exact test "
                                   "of a candidate report against a baseline (exit 1 on regression, 2 if the "
                                   "reports cannot be compared). 'check': evaluate a policy and exit 1 when the "
                                   "95%% Wilson lower bound of its success is below --min-success.")
    rsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = rsub.add_parser("record-golden", formatter_class=fmt, help="record a golden rollout file")
    r.add_argument("--env", required=True, help="env id")
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="episode seeds")
    r.add_argument("--steps", type=int, default=10, help="fixed actions per seed")
    r.add_argument("--image-size", type=int, default=32, help="camera resolution")
    r.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE", help="more env keyword arguments")
    r.add_argument("--out", required=True, help="golden JSON file")
    r = rsub.add_parser("check-golden", help="replay golden files; exit 1 on drift")
    r.add_argument("files", nargs="+", help="golden JSON files")
    r = rsub.add_parser("compare", formatter_class=fmt, help="compare two eval reports task by task")
    r.add_argument("--baseline", required=True, help="baseline report.json")
    r.add_argument("--candidate", required=True, help="candidate report.json")
    r.add_argument("--alpha", type=float, default=0.05, help="significance level")
    r.add_argument("--agent", default="policy", help="agent row to compare")
    r.add_argument("--allow-version-mismatch", action="store_true", help="compare across vlagym versions")
    r = rsub.add_parser("check", formatter_class=fmt, help="evaluate a policy against a success bar")
    r.add_argument("--policy", required=True, help="policy folder or training run folder")
    r.add_argument("--env", required=True, help="env id")
    r.add_argument("--min-success", type=float, required=True, help="bar for the 95%% Wilson lower bound")
    r.add_argument("--episodes", type=int, default=100, help="test episodes")
    r.add_argument("--seed-start", type=int, default=TEST_SEED_START, help="first seed (test split)")
    r.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    s.set_defaults(func=cmd_regress)

    s = sub.add_parser("envs", help="list registered environment ids", description="List registered ids.")
    s.set_defaults(func=cmd_envs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"vlagym {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
