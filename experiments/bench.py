"""Benchmarks (``vlagym bench ...``). Figures are ratios within one run: this machine is shared."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pybullet as pb

from vlagym.envs import ENV_IDS


def _pin_one_core() -> None:
    import os

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def bench_env(env_ids: list[str] | None = None, sizes=(64, 96, 128), steps: int = 200) -> list[dict]:
    """Env steps/s with rendering at each size, and raw PyBullet rendering of the same scene
    without the robot (the reference row: the ceiling TinyRenderer allows)."""
    _pin_one_core()
    rows = []
    for env_id in env_ids or ENV_IDS:
        for size in sizes:
            env = gym.make(env_id, image_size=size)
            rng = np.random.default_rng(0)
            env.reset(seed=0)
            env.action_space.seed(0)
            t = time.perf_counter()
            n = 0
            for _ in range(steps):
                _, _, term, trunc, _ = env.step(env.action_space.sample())
                n += 1
                if term or trunc:
                    env.reset(seed=int(rng.integers(1000)))
            env_sps = n / (time.perf_counter() - t)
            ref_fps = _reference_fps(env.unwrapped, steps)
            rows.append({"env": env_id, "size": size, "steps_per_s": env_sps, "reference_fps": ref_fps,
                         "ratio": env_sps / ref_fps})
            env.close()
    return rows


def _reference_fps(env, frames: int) -> float:
    """Render the current scene with the robot removed, by raw PyBullet calls only."""
    sim = env.sim
    sim.client.removeBody(sim.bodies["robot"])
    cam = next(iter(env.cameras.values()))
    light = env.lighting
    t = time.perf_counter()
    for _ in range(frames):
        sim.client.getCameraImage(cam.width, cam.height, cam._view, cam._proj, shadow=int(light.shadows),
                                  lightDirection=list(light.direction), renderer=pb.ER_TINY_RENDERER,
                                  flags=pb.ER_NO_SEGMENTATION_MASK)
    return frames / (time.perf_counter() - t)


def format_env_rows(rows: list[dict]) -> str:
    lines = ["| env | size | env steps/s | reference fps (no robot, raw PyBullet) | ratio |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['env']} | {r['size']} | {r['steps_per_s']:.0f} | {r['reference_fps']:.0f} | "
                     f"{r['ratio']:.2f} |")
    return "\n".join(lines)


def bench_data(root: str, workers: int = 2, batch_size: int = 32, seconds: float = 10.0) -> list[dict]:
    """Loader samples/s for RT-1-style (history 6) and BC-Z-style (horizon 10) windows."""
    from pathlib import Path

    from torch.utils.data import DataLoader

    from vlagym.agents.dataset import shard_paths
    from vlagym.policies.data import DemoWindows

    rows = []
    size = sum(p.stat().st_size for p in shard_paths(root))
    for history, horizon in ((6, 1), (1, 10)):
        ds = DemoWindows(root, history=history, horizon=horizon, augment=True)
        frames = sum(d.length for d in ds.demos)
        loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0, drop_last=True)
        n, t0 = 0, None
        it = iter(loader)
        next(it)  # start-up (worker spawn, file opening) is not throughput
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                continue
            n += len(batch["actions"])
        rows.append({"history": history, "horizon": horizon, "augment": True, "workers": workers,
                     "batch_size": batch_size, "samples_per_s": n / (time.perf_counter() - t0),
                     "bytes_per_frame": size / frames, "dataset": str(Path(root))})
    return rows
