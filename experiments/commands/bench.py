"""Speed benchmarks (bench env, data, policy, train) and the list of envs."""

from __future__ import annotations

import json
from pathlib import Path

from vlagym.experiments.commands.args import COUNT, FORMATTER, Command, Flag, add_config, at_least, env_ids


def _bench_args(s) -> None:
    from vlagym.experiments import bench

    bsub = s.add_subparsers(dest="what", required=True, metavar="WHAT")
    count = Flag(type=COUNT)
    whats = [("env", "env steps/s with rendering", bench.BenchEnvConfig, {"steps": count, "workers": count}, {}),
             ("data", "loader samples/s", bench.BenchDataConfig,
              {"workers": Flag(type=at_least(0)), "batch_size": count}, {}),
             ("policy", "each policy's size and speed, or one saved policy's backends (--policy-dir)",
              bench.BenchPolicyConfig, {"batch_size": count, "threads": count, "calls": count, "episodes": count,
                                        "steps": count}, {}),
             # --config and the positional key=value are the training config's (as for vlagym train).
             ("train", "the training loop's samples/s", bench.BenchTrainConfig,
              {"overrides": Flag(positional=True), "steps": count, "bare_threads": count},
              {"overrides": False, "config_flag": "--settings"})]
    for what, text, cls, flags, options in whats:
        b = bsub.add_parser(what, formatter_class=FORMATTER, help=text, description=text)
        add_config(b, cls, flags=flags, **options)
        b.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from vlagym.experiments import bench

    if args.what == "env":
        rows = bench.bench_env(env_ids(args.env), sizes=args.sizes, steps=args.steps, workers=args.workers,
                               panda_gym=args.panda_gym, progress=True)
        print(bench.format_env_rows(rows))
    elif args.what == "train":
        rows = bench.bench_train(args.config, args.overrides, steps=args.steps, bare_threads=args.bare_threads)
        print(bench.format_train_row(rows))
    elif args.what == "policy" and args.policy_dir:
        env_id = env_ids([args.env])[0] if args.env else None
        rows = bench.bench_policy_backends(args.policy_dir, env_id, bench.backend_names(args.backends),
                                           calls=args.calls, threads=args.threads, episodes=args.episodes,
                                           steps=args.steps)
        print(bench.format_backend_rows(rows))
    elif args.what == "policy":
        if args.backends:
            raise ValueError("--backends times one saved policy's backends: give it --policy-dir DIR")
        env_id = env_ids([args.env])[0] if args.env else "vlagym/TabletopTouch-v0"
        rows = bench.bench_policy(env_id=env_id, image_size=max(args.sizes), batch_size=args.batch_size,
                                  threads=args.threads)
        print(bench.format_policy_rows(rows))
    else:
        rows = bench.bench_data(args.data, workers=args.workers, batch_size=args.batch_size, seconds=args.seconds)
        for r in rows:
            print(f"history={r['history']:2d} horizon={r['horizon']:2d} augment={str(r['augment']):5s}: "
                  f"{r['samples_per_s']:.0f} samples/s ({r['workers']} workers, batch {r['batch_size']}); "
                  f"{r['bytes_per_frame'] / 1024:.1f} KiB per frame on disk")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _envs_args(s) -> None:
    s.set_defaults(func=cmd_envs)


def cmd_envs(args) -> int:
    import gymnasium as gym

    for env_id in env_ids(None):
        spec = gym.spec(env_id)
        print(f"{env_id:32s} max_episode_steps={spec.max_episode_steps} kwargs={spec.kwargs}")
    return 0


COMMANDS = [
    Command("bench", "benchmarks (env, data, policy, train)",
            "Speed benchmarks. 'env': env steps/s with rendering on one core at each size, beside raw PyBullet "
            "rendering of the same scene without the robot and the same env without privileged labels. 'data': "
            "loader samples/s over a dataset with worker processes. 'policy': each policy's default config on "
            "one core at the largest --sizes: parameters, checkpoint size, ms per act, ms per batch forward; with "
            "--policy-dir DIR, one saved policy's backends (--backends torch,torch-int8,onnx,onnx-int8): p50/p95 "
            "ms per step, Hz, size and the largest action difference from torch. "
            "'train': samples/s of `vlagym train` with --config and overrides for --steps steps, beside a bare "
            "forward/backward loop of the same model on every core (its own settings file is --settings). "
            "`vlagym bench WHAT --help` lists each one's settings.", _bench_args),
    Command("envs", "list registered environment ids", "List registered ids.", _envs_args),
]
