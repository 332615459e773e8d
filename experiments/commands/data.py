"""Commands that make and read demonstrations: collect, dataset, record, expert-eval."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from vlagym.core.splits import SPLIT_SEED_START, TEST_SEED_START
from vlagym.experiments.commands.args import (
    COUNT,
    Command,
    Flag,
    add_config,
    env_ids,
    honour_trust_pickle,
    trust_pickle_flag,
)


@dataclass
class ExpertEvalConfig:
    """Settings of ``vlagym expert-eval``."""

    env: list[str] | None = None
    """Env ids, or 'all' (default: every registered id)."""
    episodes: int = 200
    """Episodes per env."""
    seed_start: int = TEST_SEED_START
    """First seed."""
    workers: int | None = None
    """Worker processes (default: all cores)."""
    noise: float = 0.0
    """Std of Gaussian action noise (normalised units)."""
    render: bool = False
    """Render images too (slower; success is the same)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Env keyword arguments, e.g. action_mode=continuous."""
    min_success: float = 0.0
    """Fail (exit 1) below this overall rate."""
    out: str | None = None
    """Folder for report.json and report.md."""
    takeover_after: int | None = None
    """Hand-over check: let ``driver`` act for K steps, then a fresh expert from that state; success is counted
    over the hand-overs whose state is still solvable."""
    driver: str = "random"
    """Who acts before the hand-over: random (uniform actions) or a policy run folder."""


@dataclass
class RecordConfig:
    """Settings of ``vlagym record``."""

    env: str
    """Env id, e.g. vlagym/TabletopPickUp-v0."""
    policy: str | None = None
    """Policy or training run folder (default: the scripted expert)."""
    seed: int = TEST_SEED_START
    """Episode seed."""
    noise: float = 0.0
    """Expert action noise."""
    image_size: int = 128
    """Camera resolution (a policy's own wins)."""
    out: str = "rollout.mp4"
    """Output file (.mp4 or .gif)."""
    heatmaps: bool = False
    """Draw the policy's predicted heatmaps and pixel positions over each camera (policies trained with
    policy.heatmap_weight > 0)."""


KWARGS = Flag(aliases=("--kwargs",))
"""``env_kwargs`` keeps the flag every command had for it."""


# --- collect ------------------------------------------------------------------------------------------------
def _collect_args(s) -> None:
    from vlagym.agents.backends import EXECUTORS
    from vlagym.agents.collect import CollectConfig
    from vlagym.envs.levels import LEVELS

    add_config(s, CollectConfig, flags={
        "episodes": Flag(type=COUNT), "workers": Flag(type=COUNT, default=os.cpu_count() or 1),
        "split": Flag(choices=sorted(SPLIT_SEED_START)), "level": Flag(choices=LEVELS),
        "env_kwargs": KWARGS, "executor": Flag(choices=EXECUTORS), "address": Flag(metavar="HOST:PORT")})
    s.add_argument("--image-size", type=int, default=128, help="camera resolution")
    s.add_argument("--wrist-camera", action="store_true", help="also record rgb_wrist")
    s.set_defaults(func=cmd_collect)


def cmd_collect(args) -> int:
    from vlagym.agents.collect import CollectConfig, collect

    kwargs = {"image_size": args.image_size, **args.env_kwargs}
    if args.wrist_camera:
        kwargs["wrist_camera"] = True
    cfg = CollectConfig(**{**args.config_values, "env": env_ids([args.env])[0], "env_kwargs": kwargs})
    m = collect(cfg)
    print(f"{m['episodes']} episodes ({m['frames']} frames, {m['dropped_failures']} failures dropped) "
          f"in {args.out}; seeds {m['seed_range'][0]}..{m['seed_range'][1]} ({m['split']})")
    return 0


# --- dataset ------------------------------------------------------------------------------------------------
@dataclass
class DatasetConfig:
    """Settings of ``vlagym dataset``."""

    action: Literal["info", "show", "verify", "export"]
    """info: what the dataset holds, in numbers; show: one episode as a video; verify: decode every array and
    check the checksums; export: copy it into another format (into TARGET)."""
    path: str
    """The dataset folder (any registered format)."""
    target: str | None = None
    """export: the new dataset's folder."""
    format: str = "lerobot"
    """export: the format to write (lerobot: LeRobot v3.0; robomimic_hdf5; any registered one)."""
    episode: int = 0
    """show: the episode's index."""
    key: str = "rgb"
    """show: the camera to show (an ``obs/<key>`` image key)."""
    out: str = "episode.mp4"
    """show: the video file (.mp4 or .gif)."""


def _dataset_args(s) -> None:
    add_config(s, DatasetConfig, flags={"action": Flag(positional=True), "path": Flag(positional=True),
                                        "target": Flag(positional=True)}, overrides=False)
    s.set_defaults(func=cmd_dataset)
    s.__class__ = _Intermixed  # `dataset export --format lerobot PATH TARGET`: flags between the positionals


class _Intermixed(argparse.ArgumentParser):
    """Parses flags and positionals in any order (argparse's intermixed parsing): plain parsing gives the
    optional positionals PATH and TARGET nothing when a flag comes between them and ACTION."""

    def parse_known_args(self, args=None, namespace=None):
        if getattr(self, "_intermixing", False):  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def cmd_dataset(args) -> int:
    from vlagym.dataio.dataset import DatasetError
    from vlagym.dataio.format import open_dataset

    args = argparse.Namespace(**{**vars(args), **args.config_values})
    if args.action == "verify":
        return _verify_dataset(args.path)
    if args.action == "info":
        _print_info(args.path)
        return 0
    if args.action == "export":
        return _export_dataset(args)
    refs = open_dataset(args.path).episodes()
    from vlagym.agents.video import annotate, write_video
    from vlagym.dataio.dataset import load_demo

    if not 0 <= args.episode < len(refs):
        raise ValueError(f"episode {args.episode} out of range: the dataset has {len(refs)} episodes")
    demo = load_demo(refs[args.episode])
    if args.key not in demo["obs"]:
        raise DatasetError(f"{refs[args.episode].path} [{refs[args.episode].key}]: no obs/{args.key}; "
                           f"have {sorted(demo['obs'])}")
    frames = [annotate(f, refs[args.episode].instruction, t) for t, f in enumerate(demo["obs"][args.key])]
    path = write_video(args.out, frames)
    print(f"episode {args.episode} (seed {refs[args.episode].seed}, {len(frames)} frames) -> {path}")
    return 0


def _print_info(path: str) -> None:
    import numpy as np

    from vlagym.dataio.info import summarize

    d = summarize(path)
    print(f"dataset      {d.path}")
    print(f"env          {d.env}  split={d.split}  noise={d.noise}")
    print(f"episodes     {d.episodes}  (dropped failures: {d.dropped_failures})")
    print(f"frames       {d.frames}  (mean length {d.mean_length:.1f})")
    print(f"success      {d.success_rate:.0%} ({d.succeeded} of {d.episodes} episodes' 'success' attribute)")
    print(f"instructions {d.instructions} distinct; vocabulary {len(d.vocabulary)} words:")
    print("             " + " ".join(d.vocabulary))
    print("actions      mean " + np.array2string(np.array(d.actions["mean"]), precision=3))
    print("             std  " + np.array2string(np.array(d.actions["std"]), precision=3))
    print("             min  " + np.array2string(np.array(d.actions["min"]), precision=3))
    print("             max  " + np.array2string(np.array(d.actions["max"]), precision=3))
    print(f"size on disk {d.bytes / 2**20:.1f} MiB ({d.bytes_per_frame / 1024:.1f} KiB per frame)")


def _verify_dataset(path: str) -> int:
    """Decode every chunk, compare checksums; one line per shard, every problem, a summary; 1 on problems."""
    from vlagym.dataio.dataset import verify

    checks = verify(path)
    for c in checks:
        sums = "checksums match" if not c.without_checksums else (
            f"decoded; {c.without_checksums} demos have no checksums (written before format 2)")
        print(f"{c.path.name}  {c.demos} demos  " + ("ok, " + sums if c.ok else f"BAD: {len(c.problems)} problems"))
        for problem in c.problems:
            print(f"  {problem}")
    problems = sum(len(c.problems) for c in checks)
    demos = sum(c.demos for c in checks)
    unchecked = sum(c.without_checksums for c in checks)
    print(f"verified {demos} demos in {len(checks)} shards: " + (f"{problems} problems in "
          f"{sum(not c.ok for c in checks)} shards" if problems else "no problems")
          + (f"; {unchecked} demos without checksums were only decoded" if unchecked else ""))
    return 1 if problems else 0


def _export_dataset(args) -> int:
    from vlagym.dataio.export import export_dataset

    if not args.target:
        raise ValueError("dataset export needs the new dataset's folder: vlagym dataset export PATH TARGET")
    m = export_dataset(args.path, args.target, args.format)
    print(f"{m['episodes']} episodes ({m['frames']} frames) from {args.path} -> {args.target} ({args.format})")
    return 0


# --- record -------------------------------------------------------------------------------------------------
def _record_args(s) -> None:
    add_config(s, RecordConfig)
    trust_pickle_flag(s, "unpickling an SB3 --policy zip that cannot be loaded safely")
    s.set_defaults(func=cmd_record)


def cmd_record(args) -> int:
    import gymnasium as gym

    from vlagym.agents.rollout import run_episode, video_kwargs
    from vlagym.agents.video import write_video

    honour_trust_pickle(args)
    env_id = env_ids([args.env])[0]
    kwargs = {"image_size": args.image_size, **video_kwargs(env_id)}
    if args.policy:
        from vlagym.agents.policy_agent import PolicyAgent, policy_env_kwargs

        agent = PolicyAgent.load(args.policy)
        kwargs.update(policy_env_kwargs(args.policy))  # the env the policy was trained on
        make_agent = lambda e: agent  # noqa: E731
    else:
        make_agent = lambda e: e.unwrapped.task.expert(noise=args.noise)  # noqa: E731
    env = gym.make(env_id, **kwargs)
    if args.heatmaps and not args.policy:
        raise ValueError("--heatmaps draws a trained policy's grounding heads; pass --policy")
    ep = run_episode(env, args.seed, make_agent, record=True, heatmaps=args.heatmaps)
    path = write_video(args.out, ep.frames)
    who = args.policy or "expert"
    print(f"{who} on {ep.instruction!r}: {'success' if ep.success else 'failure'} in {ep.steps} steps -> {path}")
    return 0


# --- expert-eval --------------------------------------------------------------------------------------------
def _expert_eval_args(s) -> None:
    add_config(s, ExpertEvalConfig, flags={
        "episodes": Flag(type=COUNT), "workers": Flag(type=COUNT), "env_kwargs": KWARGS,
        "takeover_after": Flag(type=COUNT, metavar="K")}, overrides=False)
    s.set_defaults(func=cmd_expert_eval)


def cmd_expert_eval(args) -> int:
    from vlagym.agents.rollout import Job, run_jobs
    from vlagym.envs import check_env_kwargs
    from vlagym.experiments.report import build_report, to_markdown, write_report

    ids = env_ids(args.env)
    extra = args.env_kwargs
    kwargs = tuple(sorted({**({} if args.render else {"obs_mode": "state"}), **extra}.items()))
    for e in ids:
        check_env_kwargs(e, dict(kwargs))
    if args.out:
        from vlagym.experiments.evaluate import check_writable

        check_writable(args.out)
    seeds = {e: list(range(args.seed_start, args.seed_start + args.episodes)) for e in ids}
    takeover = args.takeover_after
    driver = "expert"
    if takeover is not None:
        driver = args.driver
        if driver != "random":
            from vlagym.agents.policy_agent import policy_env_kwargs

            kwargs = tuple(sorted({**policy_env_kwargs(driver), **extra}.items()))
    jobs = [Job(e, s, noise=args.noise, env_kwargs=kwargs, agent=driver, takeover=takeover)
            for e in ids for s in seeds[e]]
    episodes = run_jobs(jobs, workers=args.workers, desc="expert-eval" if takeover is None else "hand-over")
    if takeover is not None:
        from vlagym.agents.stats import handover_summary

        summary = handover_summary(episodes)
        episodes = [ep for ep in episodes if (ep.info.get("handover") or {}).get("unsolvable", "") is None]
        seeds = {e: [ep.seed for ep in episodes if ep.env_id == e] for e in ids}
    report = build_report({"expert": episodes}, seeds, job="expert-eval", noise=args.noise, env_kwargs=extra)
    if takeover is not None:
        report["handover"] = {"after_steps": takeover, "driver": driver, "per_task": summary}
    print(to_markdown(report))
    if takeover is not None:
        print(f"hand-over after {takeover} steps of {driver}; success above counts solvable hand-overs only")
        for env_id, row in summary.items():
            print(f"  {env_id}: {row['solvable']} solvable, {row['unsolvable']} unsolvable "
                  f"{row['reasons'] or ''}, {row['ended_before']} ended before the hand-over")
    if args.out:
        json_path, _ = write_report(report, args.out)
        print(f"report: {json_path}")
    rate = report["agents"]["expert"]["overall"]["success_rate"]
    return 0 if rate >= args.min_success else 1


COMMANDS = [
    Command("expert-eval", "measure the scripted experts' success",
            "Run each task's scripted expert on consecutive seeds and report success with 95% Wilson intervals. "
            "Exits 1 if overall success < --min-success.", _expert_eval_args),
    Command("record", "record one rollout (policy or expert) to MP4 or GIF",
            "Roll out a trained policy (--policy) or the scripted expert on one seed and write an annotated video "
            "(the suffix picks the format: .mp4 or .gif).", _record_args),
    Command("collect", "collect expert demonstrations into HDF5",
            "Run the scripted expert in worker processes and keep the first N successful episodes in "
            "robomimic-layout HDF5 shards, with a manifest and action statistics. Rerun the same command to "
            "resume.", _collect_args),
    Command("dataset", "inspect or convert a dataset (info, show, verify, export)",
            "'info': episodes, frames, success, instructions, action statistics, size. 'show': write one episode "
            "as a video with its instruction drawn on it. 'verify': decode every chunk and check the stored "
            "checksums; exits 1 naming each bad file, demo, key and frame. 'export PATH TARGET --format lerobot': "
            "write it in another format (LeRobot v3.0).", _dataset_args),
]
