"""Policy evaluation against the expert on the same held-out seeds (``vlagym eval``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vlagym.agents.dataset import SPLIT_SEED_START, split_of
from vlagym.agents.policy_agent import policy_env_kwargs, resolve_policy_dir
from vlagym.agents.rollout import Episode, Job, run_jobs, video_kwargs
from vlagym.agents.video import grid, write_video
from vlagym.experiments.report import build_report, write_report


def evaluate(
    policy: str | None,
    env_ids: list[str],
    episodes: int,
    seed_start: int = SPLIT_SEED_START["test"],
    workers: int | None = None,
    video_dir: str | None = None,
    videos_per_env: int = 4,
    expert: bool = True,
    out: str | None = None,
    gif: bool = False,
) -> dict[str, Any]:
    """Run ``policy`` (a checkpoint or run folder) and the expert on ``episodes`` seeds per env.

    Seeds must come from the test split unless you ask for validation seeds explicitly:
    training seeds are refused, since a policy evaluated there measures memory, not skill.
    """
    if split_of(seed_start) == "train" or split_of(seed_start + episodes - 1) == "train":
        raise ValueError(f"seeds {seed_start}..{seed_start + episodes - 1} overlap the training split "
                         f"[0, {SPLIT_SEED_START['val']}); evaluate on test seeds (from {SPLIT_SEED_START['test']})")
    t0 = time.time()
    seeds = {e: list(range(seed_start, seed_start + episodes)) for e in env_ids}
    agents: dict[str, str] = {}
    env_kwargs: dict[str, Any] = {}
    if policy is not None:
        agents["policy"] = str(resolve_policy_dir(policy))
        # The env as the policy saw it in training (image size, action mode); the expert gets the same.
        env_kwargs = policy_env_kwargs(policy)
    if expert:
        agents["expert"] = "expert"
    recording = video_dir is not None
    jobs = [Job(e, s, record=recording and i < videos_per_env, agent=path,
                env_kwargs=tuple(sorted({**env_kwargs, **(video_kwargs(e) if recording else {})}.items())))
            for name, path in agents.items() for e in env_ids for i, s in enumerate(seeds[e])]
    results = run_jobs(jobs, workers=workers, desc="eval")
    rows: dict[str, list[Episode]] = {name: [] for name in agents}
    for job, ep in zip(jobs, results):
        rows[next(n for n, p in agents.items() if p == job.agent)].append(ep)
    videos = _write_videos(rows, video_dir, gif) if video_dir else []
    report = build_report(rows, seeds, job="eval", policy=agents.get("policy"), env_kwargs=env_kwargs, videos=videos,
                          wall_time_s=round(time.time() - t0, 1))
    if out:
        json_path, md_path = write_report(report, out)
        report["paths"] = {"report_json": str(json_path), "report_md": str(md_path)}
    return report


def _write_videos(rows: dict[str, list[Episode]], video_dir: str, gif: bool) -> list[str]:
    out, paths = Path(video_dir), []
    suffix = "gif" if gif else "mp4"
    for agent, episodes in rows.items():
        by_env: dict[str, list[Episode]] = {}
        for ep in episodes:
            if ep.frames:
                by_env.setdefault(ep.env_id, []).append(ep)
        for env_id, eps in by_env.items():
            name = env_id.split("/")[-1]
            for ep in eps:
                paths.append(str(write_video(out / f"{agent}_{name}_seed{ep.seed}.{suffix}", ep.frames)))
            paths.append(str(write_video(out / f"{agent}_{name}_grid.mp4", grid([e.frames for e in eps]))))
    return paths
