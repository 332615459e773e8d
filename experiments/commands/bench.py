"""Speed benchmarks (bench env, data, policy, train) and the list of envs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlagym.experiments.commands.args import FORMATTER, Command, at_least, env_ids


def _bench_args(s) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=None, help="dataset folder (data)")
    common.add_argument("--workers", type=at_least(0), default=2,
                        help="DataLoader workers (data; 0 loads in this process)")
    common.add_argument("--batch-size", type=int, default=32, help="batch size (data, policy)")
    common.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement (data)")
    common.add_argument("--env", nargs="+", default=None, help="env ids (default: all)")
    common.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128], help="image sizes")
    common.add_argument("--steps", type=int, default=200, help="steps per measurement (env, train)")
    common.add_argument("--json", default=None, help="also write the rows to this JSON file")
    bsub = s.add_subparsers(dest="what", required=True, metavar="WHAT")
    for what, text in (("env", "env steps/s with rendering"), ("data", "loader samples/s"),
                       ("policy", "each policy's size and speed"), ("train", "the training loop's samples/s")):
        b = bsub.add_parser(what, parents=[common], formatter_class=FORMATTER, help=text, description=text)
        if what == "train":
            b.add_argument("--config", default=None, help="training YAML config")
            b.add_argument("overrides", nargs="*", help="key=value training overrides (as for vlagym train)")
        b.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from vlagym.experiments.bench import bench_env, format_env_rows

    if args.what == "env":
        rows = bench_env(env_ids(args.env), sizes=args.sizes, steps=args.steps)
        print(format_env_rows(rows))
    elif args.what == "train":
        from vlagym.experiments.bench import bench_train, format_train_row

        rows = bench_train(args.config, args.overrides, steps=args.steps)
        print(format_train_row(rows))
    elif args.what == "policy":
        from vlagym.experiments.bench import bench_policy, format_policy_rows

        env_id = env_ids(args.env)[0] if args.env else "vlagym/TabletopTouch-v0"
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
            "one core at the largest --sizes: parameters, checkpoint size, ms per act, ms per batch forward. "
            "'train': samples/s of `vlagym train` with --config and overrides for --steps steps, beside a bare "
            "forward/backward loop of the same model on every core.", _bench_args),
    Command("envs", "list registered environment ids", "List registered ids.", _envs_args),
]
