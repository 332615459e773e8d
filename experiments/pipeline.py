"""The main job (``vlagym pipeline``): everything vlagym can do so far, on its embedded default.

Today: scripted experts run on every tabletop task on held-out test seeds, in parallel;
per-task rollout videos and a grid video are written with the instruction and outcome drawn
on them, then ``report.json`` / ``report.md``. Later steps add collection, training and
policy evaluation to this same command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vlagym.agents.rollout import Job, run_jobs
from vlagym.agents.video import grid, write_video
from vlagym.envs import ENV_IDS
from vlagym.experiments.report import build_report, write_report

TEST_SEED_START = 2_000_000  # train seeds start at 0, validation at 1e6, test at 2e6


@dataclass
class PipelineConfig:
    """Sizes of the main job."""

    out: str = "runs/main"
    """Output folder (videos/, report.json, report.md)."""
    envs: tuple[str, ...] = tuple(ENV_IDS)
    """Environment ids to run."""
    episodes: int = 20
    """Expert episodes per environment."""
    videos: int = 4
    """Episodes per environment recorded as MP4 (the first ones)."""
    seed_start: int = TEST_SEED_START
    """First seed; episode i of every env uses seed_start + i."""
    workers: int | None = None
    """Worker processes (default: all cores)."""

    @classmethod
    def quick(cls, **kw) -> PipelineConfig:
        return cls(**{"episodes": 4, "videos": 2, **kw})


def run_pipeline(cfg: PipelineConfig) -> dict:
    out = Path(cfg.out)
    t0 = time.time()
    seeds = {env_id: [cfg.seed_start + i for i in range(cfg.episodes)] for env_id in cfg.envs}
    jobs = [Job(env_id, s, record=i < cfg.videos) for env_id in cfg.envs for i, s in enumerate(seeds[env_id])]
    episodes = run_jobs(jobs, workers=cfg.workers, desc="expert episodes")
    videos = []
    for env_id in cfg.envs:
        recorded = [e for e in episodes if e.env_id == env_id and e.frames]
        name = env_id.split("/")[-1]
        for e in recorded:
            videos.append(str(write_video(out / "videos" / f"{name}_seed{e.seed}.mp4", e.frames)))
        if recorded:
            videos.append(str(write_video(out / "videos" / f"{name}_grid.mp4", grid([e.frames for e in recorded]))))
    report = build_report({"expert": episodes}, seeds, job="pipeline", videos=videos,
                          wall_time_s=round(time.time() - t0, 1))
    json_path, md_path = write_report(report, out)
    report["paths"] = {"report_json": str(json_path), "report_md": str(md_path), "videos": str(out / "videos")}
    return report
