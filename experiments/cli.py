"""The ``vlagym`` command line: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlagym.experiments.pipeline import TEST_SEED_START, PipelineConfig


def _env_ids(values: list[str] | None) -> list[str]:
    from vlagym.envs import ENV_IDS, check_env_id

    if not values or values == ["all"]:
        return list(ENV_IDS)
    return [check_env_id(v) for v in values]


# --- subcommands ----------------------------------------------------------------------------------------------
def cmd_pipeline(args) -> int:
    from vlagym.experiments.pipeline import run_pipeline

    base = PipelineConfig.quick if args.quick else PipelineConfig
    overrides = {k: v for k, v in {"out": args.out, "episodes": args.episodes, "videos": args.videos,
                                   "workers": args.workers}.items() if v is not None}
    if args.env:
        overrides["envs"] = tuple(_env_ids(args.env))
    report = run_pipeline(base(**overrides))
    overall = report["agents"]["expert"]["overall"]
    print(Path(report["paths"]["report_md"]).read_text())
    print(f"expert success {overall['success_rate']:.1%} over {overall['episodes']} episodes")
    print(f"report: {report['paths']['report_json']} and {report['paths']['report_md']}")
    print(f"videos: {report['paths']['videos']}/")
    return 0


def cmd_expert_eval(args) -> int:
    from vlagym.agents.rollout import Job, run_jobs
    from vlagym.experiments.report import build_report, to_markdown, write_report

    env_ids = _env_ids(args.env)
    kwargs = (("obs_mode", "state"),) if not args.render else ()
    seeds = {e: list(range(args.seed_start, args.seed_start + args.episodes)) for e in env_ids}
    jobs = [Job(e, s, noise=args.noise, env_kwargs=kwargs) for e in env_ids for s in seeds[e]]
    episodes = run_jobs(jobs, workers=args.workers, desc="expert-eval")
    report = build_report({"expert": episodes}, seeds, job="expert-eval", noise=args.noise)
    print(to_markdown(report))
    if args.out:
        json_path, _ = write_report(report, args.out)
        print(f"report: {json_path}")
    rate = report["agents"]["expert"]["overall"]["success_rate"]
    return 0 if rate >= args.min_success else 1


def cmd_record(args) -> int:
    import gymnasium as gym

    from vlagym.agents.rollout import run_episode
    from vlagym.agents.video import write_video

    env = gym.make(_env_ids([args.env])[0], image_size=args.image_size)
    ep = run_episode(env, args.seed, lambda e: e.unwrapped.task.expert(noise=args.noise), record=True)
    path = write_video(args.out, ep.frames)
    print(f"{ep.instruction!r}: {'success' if ep.success else 'failure'} in {ep.steps} steps -> {path}")
    return 0


def cmd_bench(args) -> int:
    from vlagym.experiments.bench import bench_env, format_env_rows

    if args.what == "env":
        rows = bench_env(_env_ids(args.env), sizes=args.sizes, steps=args.steps)
        print(format_env_rows(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def cmd_envs(args) -> int:
    import gymnasium as gym

    for env_id in _env_ids(None):
        spec = gym.spec(env_id)
        print(f"{env_id:32s} max_episode_steps={spec.max_episode_steps} kwargs={spec.kwargs}")
    return 0


# --- parser -----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vlagym",
        description="Language-conditioned robot learning in simulation: environments, experts, policies.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    s = sub.add_parser("pipeline", formatter_class=fmt,
                       help="the main job: expert episodes on every task, videos and a report",
                       description="Run the main job end to end on its embedded default and print where the "
                                   "report and videos are.")
    s.add_argument("--quick", action="store_true", help="a first look in well under 3 minutes")
    s.add_argument("--out", default=None, help="output folder (default runs/main)")
    s.add_argument("--env", nargs="+", default=None, help="env ids (default: every registered id)")
    s.add_argument("--episodes", type=int, default=None, help="expert episodes per env (default 20; quick 4)")
    s.add_argument("--videos", type=int, default=None, help="episodes recorded per env (default 4; quick 2)")
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
    s.add_argument("--min-success", type=float, default=0.0, help="fail (exit 1) below this overall rate")
    s.add_argument("--out", default=None, help="folder for report.json and report.md")
    s.set_defaults(func=cmd_expert_eval)

    s = sub.add_parser("record", formatter_class=fmt, help="record one expert rollout to MP4 or GIF",
                       description="Roll out the scripted expert on one seed and write an annotated video "
                                   "(the suffix picks the format: .mp4 or .gif).")
    s.add_argument("--env", required=True, help="env id, e.g. vlagym/TabletopPickUp-v0")
    s.add_argument("--seed", type=int, default=TEST_SEED_START, help="episode seed")
    s.add_argument("--noise", type=float, default=0.0, help="expert action noise")
    s.add_argument("--image-size", type=int, default=128, help="camera resolution")
    s.add_argument("--out", default="rollout.mp4", help="output file (.mp4 or .gif)")
    s.set_defaults(func=cmd_record)

    s = sub.add_parser("bench", formatter_class=fmt, help="benchmarks (env)",
                       description="Speed benchmarks. 'env': env steps/s with rendering on one core at each "
                                   "size, beside raw PyBullet rendering of the same scene without the robot.")
    s.add_argument("what", choices=["env"], help="what to benchmark")
    s.add_argument("--env", nargs="+", default=None, help="env ids (default: all)")
    s.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128], help="image sizes")
    s.add_argument("--steps", type=int, default=200, help="steps per measurement")
    s.add_argument("--json", default=None, help="also write the rows to this JSON file")
    s.set_defaults(func=cmd_bench)

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
