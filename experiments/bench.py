"""Benchmarks (``vlagym bench ...``). Figures are ratios within one run: this machine is shared.

Each ``vlagym bench WHAT`` has its settings dataclass here (``BenchEnvConfig``, ``BenchDataConfig``,
``BenchPolicyConfig``, ``BenchTrainConfig``); the command line is generated from them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pybullet as pb

from vlagym.envs import ENV_IDS


# --- settings -------------------------------------------------------------------------------------------------
@dataclass
class BenchEnvConfig:
    """Settings of ``vlagym bench env``."""

    env: list[str] | None = None
    """Env ids (default: every registered one)."""
    sizes: list[int] = field(default_factory=lambda: [96, 128])
    """Image sizes (pixels), one row each."""
    steps: int = 200
    """Env steps per measurement."""
    workers: int = 1
    """Measurement processes at once, each pinned to its own core (at most the cores this process may use;
    keep 1 on a shared machine)."""
    panda_gym: bool = True
    """Also time panda-gym 3.0.7's PandaPickAndPlace-v3 (step + TinyRenderer render at the largest size) in
    the same run, when ``panda_gym`` is importable (an optional comparison, not a dependency)."""
    json: str | None = None
    """Also write the rows to this JSON file."""


@dataclass
class BenchDataConfig:
    """Settings of ``vlagym bench data``."""

    data: str
    """Dataset folder (from vlagym collect)."""
    workers: int = 2
    """DataLoader worker processes (0 loads in this process)."""
    batch_size: int = 32
    """Batch size."""
    seconds: float = 10.0
    """Seconds per measurement."""
    json: str | None = None
    """Also write the rows to this JSON file."""


@dataclass
class BenchPolicyConfig:
    """Settings of ``vlagym bench policy``."""

    policy_dir: str | None = None
    """A saved policy folder (or training run): time its inference backends (--backends) instead of every
    registered policy's default config."""
    backends: list[str] | None = None
    """Backends for --policy-dir, space- or comma-separated: torch, torch-int8, onnx (onnxruntime), onnx-int8
    (onnxruntime-int8) (default: all four)."""
    env: str | None = None
    """Env id whose spaces the policies are built for (default TabletopTouch-v0); with --policy-dir, whose
    expert rollouts give the observations (default: the policy's env)."""
    sizes: list[int] = field(default_factory=lambda: [64, 96, 128])
    """Image sizes; the default configs are built at the largest (not with --policy-dir)."""
    batch_size: int = 32
    """Batch size of the batched forward (not with --policy-dir)."""
    threads: int = 1
    """CPU threads per policy."""
    calls: int = 100
    """Timed calls per backend (--policy-dir)."""
    episodes: int = 2
    """Expert episodes on validation seeds whose observations are timed (--policy-dir; onnx-int8 is
    calibrated on them)."""
    steps: int = 30
    """Most observations kept per episode (--policy-dir)."""
    json: str | None = None
    """Also write the rows to this JSON file."""


@dataclass
class BenchTrainConfig:
    """Settings of ``vlagym bench train``. ``config`` and ``overrides`` are the training config's (as for
    ``vlagym train``), so this command's own settings file is ``--settings``."""

    config: str | None = None
    """Training YAML config."""
    overrides: list[str] = field(default_factory=list)
    """Training key=value overrides (as for vlagym train)."""
    steps: int = 200
    """Training steps measured."""
    bare_threads: int | None = None
    """Threads of the bare forward/backward loop (default: every core)."""
    json: str | None = None
    """Also write the row to this JSON file."""


BACKEND_ALIASES = {"onnx": "onnxruntime", "onnx-int8": "onnxruntime-int8"}
"""Short names ``--backends`` also takes."""


def backend_names(values: list[str] | None) -> tuple[str, ...] | None:
    """``--backends`` values (each may hold several, comma-separated; short ONNX names allowed) as the names of
    ``vlagym.policies.compress.benchmark.BACKENDS``; None for all. An unknown one is refused, naming the
    choices."""
    if not values:
        return None
    from vlagym.policies.compress.benchmark import BACKENDS

    names = [BACKEND_ALIASES.get(v.strip(), v.strip()) for value in values for v in str(value).split(",") if v.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; choose from {', '.join([*BACKENDS, *BACKEND_ALIASES])}")
    return tuple(dict.fromkeys(names))


def _pin_one_core(core: int | None = None) -> int | None:
    """Pin this process to ``core`` (default: the lowest it may use); returns the core, None where the OS cannot."""
    import os

    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0)) if core is None else core
    os.sched_setaffinity(0, {core})
    return core


PANDA_GYM_ID = "PandaPickAndPlace-v3"
"""panda-gym's pick-and-place, the comparison ``vlagym bench env`` times beside ours (panda-gym 3.0.7)."""


def bench_env(env_ids: list[str] | None = None, sizes=(96, 128), steps: int = 200, workers: int = 1,
              panda_gym: bool = True, progress: bool = False) -> list[dict]:
    """Env steps/s with rendering at each size, each (env, size) measured in a fresh process pinned to its own
    core, beside raw PyBullet rendering of the same scene without the robot (the ceiling TinyRenderer allows:
    ``ratio`` is steps/s over it) and beside the same env without privileged labels (``privileged_labels=False``:
    what the labels cost).

    The scripted expert drives (random actions would mostly call ``stop`` in discrete navigation); only
    ``env.step`` is timed, and resets are reported on their own. Rates are given by the wall clock and by the
    process's CPU time (``cpu_*``: what one free core would do; on a shared machine the wall clock also counts
    waiting for the core), and ``ratio`` uses CPU time on both sides. With ``panda_gym`` and panda-gym installed,
    one more row times its PandaPickAndPlace-v3 (random actions, ``step`` + ``render`` with TinyRenderer at the
    largest size) in the same way; without it the row says it was skipped.
    """
    import importlib.util
    import multiprocessing as mp
    import os

    jobs: list[tuple] = [("vlagym", env_id, int(size), steps) for env_id in (env_ids or ENV_IDS) for size in sizes]
    skipped = None
    if panda_gym:
        if importlib.util.find_spec("panda_gym") is None:
            skipped = "panda_gym is not installed (pip install panda-gym==3.0.7 --no-deps): comparison skipped"
        else:
            jobs.append(("panda_gym", PANDA_GYM_ID, int(max(sizes)), steps))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
    workers = max(1, min(workers, len(cores), len(jobs)))
    ctx = mp.get_context("spawn")  # a fresh interpreter per measurement: nothing cached from the one before
    core_queue = ctx.Queue()
    for core in cores[:workers]:
        core_queue.put(core)
    from tqdm import tqdm

    with ctx.Pool(workers, initializer=_bench_worker_init, initargs=(core_queue,), maxtasksperchild=1) as pool:
        rows = list(tqdm(pool.imap(_bench_job, jobs), total=len(jobs), desc="bench env", disable=not progress))
    if skipped:
        rows.append({"env": PANDA_GYM_ID, "skipped": skipped})
    return rows


_WORKER_CORE: int | None = None


def _bench_worker_init(core_queue) -> None:
    global _WORKER_CORE
    core = core_queue.get()
    _WORKER_CORE = _pin_one_core(core)
    core_queue.put(core)  # maxtasksperchild=1: the next process on this slot takes the core back


def _bench_job(job: tuple) -> dict:
    kind, env_id, size, steps = job
    row = _time_panda_gym(env_id, size, steps) if kind == "panda_gym" else _time_vlagym(env_id, size, steps)
    row["core"] = _WORKER_CORE
    return row


def _time_vlagym(env_id: str, size: int, steps: int) -> dict:
    plain = _time_steps(env_id, steps, image_size=size, privileged_labels=False)
    plain["env"].close()
    timed = _time_steps(env_id, steps, image_size=size)
    env = timed["env"]
    ref_fps, ref_cpu_fps = _reference_fps(env.unwrapped, steps)
    env.close()
    return {"env": env_id, "size": size, "steps": steps, "steps_per_s": timed["sps"],
            "cpu_steps_per_s": timed["cpu_sps"], "reference_fps": ref_fps, "cpu_reference_fps": ref_cpu_fps,
            "ratio": timed["cpu_sps"] / ref_cpu_fps, "reset_ms": timed["reset_ms"],
            "steps_per_s_no_labels": plain["sps"], "cpu_steps_per_s_no_labels": plain["cpu_sps"],
            "labels_cost": plain["cpu_sps"] / timed["cpu_sps"] - 1.0}


def _time_steps(env_id: str, steps: int, **kwargs) -> dict:
    """Steps/s of ``env.step`` under the expert (wall clock and CPU), mean reset ms, and the env (still open)."""
    env = gym.make(env_id, **kwargs)
    seed = 0
    obs, info = env.reset(seed=seed)
    expert = env.unwrapped.task.expert()
    step_t = step_c = reset_t = 0.0
    resets = 0
    for _ in range(steps):
        action = expert.act(obs, info)
        t, c = time.perf_counter(), time.process_time()
        obs, _, term, trunc, info = env.step(action)
        step_t += time.perf_counter() - t
        step_c += time.process_time() - c
        if term or trunc:
            seed += 1
            t = time.perf_counter()
            obs, info = env.reset(seed=seed)
            reset_t += time.perf_counter() - t
            resets += 1
            expert = env.unwrapped.task.expert()
    return {"sps": steps / step_t, "cpu_sps": steps / max(step_c, 1e-9),
            "reset_ms": 1000 * reset_t / max(resets, 1), "env": env}


def _reference_fps(env, frames: int) -> tuple[float, float]:
    """Render the current scene without the robot, by raw PyBullet calls only (wall and CPU frames/s).

    The robot is made transparent (TinyRenderer skips bodies of zero alpha) rather than removed: removing a
    body moves the last-made one into its place in TinyRenderer's draw order, and the envs order their bodies
    so that far surfaces are drawn last (``Simulation.create_visual``).
    """
    sim = env.sim
    robot = sim.bodies["robot"]
    for link in range(-1, sim.client.getNumJoints(robot)):
        sim.client.changeVisualShape(robot, link, rgbaColor=[1.0, 1.0, 1.0, 0.0])
    cam = next(iter(env.cameras.values()))
    light = env.lighting
    t, c = time.perf_counter(), time.process_time()
    for _ in range(frames):
        sim.client.getCameraImage(cam.width, cam.height, cam._view, cam._proj, shadow=int(light.shadows),
                                  lightDirection=list(light.direction), lightColor=list(light.color),
                                  lightAmbientCoeff=light.ambient, lightDiffuseCoeff=light.diffuse,
                                  lightSpecularCoeff=light.specular, renderer=pb.ER_TINY_RENDERER,
                                  flags=pb.ER_NO_SEGMENTATION_MASK)
    return frames / (time.perf_counter() - t), frames / max(time.process_time() - c, 1e-9)


def _time_panda_gym(env_id: str, size: int, steps: int) -> dict:
    """panda-gym's env under random actions: ``step`` + ``render`` (TinyRenderer, ``size`` px) timed together."""
    import contextlib
    import io
    from importlib.metadata import version

    import panda_gym  # noqa: F401  (registers its ids)

    with contextlib.redirect_stdout(io.StringIO()):
        env = gym.make(env_id, render_mode="rgb_array", renderer="Tiny", render_width=size, render_height=size)
    env.action_space.seed(0)
    env.reset(seed=0)
    env.render()
    step_t = step_c = 0.0
    for i in range(steps):
        action = env.action_space.sample()
        t, c = time.perf_counter(), time.process_time()
        _, _, term, trunc, _ = env.step(action)
        env.render()
        step_t += time.perf_counter() - t
        step_c += time.process_time() - c
        if term or trunc:
            env.reset(seed=i + 1)
    env.close()
    return {"env": env_id, "size": size, "steps": steps, "steps_per_s": steps / step_t,
            "cpu_steps_per_s": steps / max(step_c, 1e-9), "comparison": f"panda-gym {version('panda-gym')}"}


def format_env_rows(rows: list[dict]) -> str:
    lines = ["Rates per process, each pinned to its own core; CPU-time rates (what one free core does) first, "
             "wall clock in brackets. ratio = CPU steps/s over the CPU reference fps.",
             "| env | size | env steps/s | reference fps (no robot, raw PyBullet) | ratio | reset ms "
             "| steps/s without labels | labels cost | core |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for r in rows:
        if "skipped" in r:
            notes.append(f"{r['env']}: {r['skipped']}")
        elif "comparison" in r:
            lines.append(f"| {r['env']} ({r['comparison']}, step + render) | {r['size']} | "
                         f"{r['cpu_steps_per_s']:.0f} ({r['steps_per_s']:.0f}) | | | | | | {r['core']} |")
        else:
            lines.append(f"| {r['env']} | {r['size']} | {r['cpu_steps_per_s']:.0f} ({r['steps_per_s']:.0f}) | "
                         f"{r['cpu_reference_fps']:.0f} ({r['reference_fps']:.0f}) | {r['ratio']:.2f} | "
                         f"{r['reset_ms']:.0f} | {r['cpu_steps_per_s_no_labels']:.0f} "
                         f"({r['steps_per_s_no_labels']:.0f}) | {100 * r['labels_cost']:+.0f}% | {r['core']} |")
    return "\n".join(lines + notes)


def bench_data(root: str, workers: int = 2, batch_size: int = 32, seconds: float = 10.0) -> list[dict]:
    """Loader samples/s for RT-1-style (history 6) and BC-Z-style (horizon 10) windows."""
    from pathlib import Path

    from torch.utils.data import DataLoader

    from vlagym.dataio.format import open_dataset
    from vlagym.dataio.windows import DemoWindows

    rows = []
    size = sum(p.stat().st_size for p in open_dataset(root).files())
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


def bench_policy(names: tuple[str, ...] | None = None, env_id: str = "vlagym/TabletopTouch-v0",
                 image_size: int = 128, batch_size: int = 32, acts: int = 60, forwards: int = 3,
                 threads: int = 1, overrides: dict[str, dict] | None = None) -> list[dict]:
    """Each policy's default config (``names``, default every registered policy) on ``env_id``'s spaces:
    parameters, checkpoint size, ms per ``act`` (one observation, history and caches as in an episode) and
    ms per batched forward (``predict``, and ``loss`` + backward) on ``threads`` CPU threads. Times are medians over
    calls, which shrugs off other people's processes on a shared machine."""
    import statistics
    import tempfile
    from pathlib import Path

    import torch

    from vlagym.policies import make_policy, policy_names

    def median_ms(fn, n: int) -> tuple[float, float]:
        """Median wall-clock and CPU milliseconds per call (CPU time ignores waiting for a busy core)."""
        wall, cpu = [], []
        for _ in range(n):
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return statistics.median(wall) * 1000, statistics.median(cpu) * 1000

    torch.set_num_threads(threads)
    env = gym.make(env_id, image_size=image_size)
    obs, _ = env.reset(seed=0)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    rng = np.random.default_rng(0)
    rows = []
    for name in names or policy_names():
        torch.manual_seed(0)
        policy = make_policy(name, obs_space, act_space, **(overrides or {}).get(name, {})).eval()
        cfg = policy.config
        with tempfile.TemporaryDirectory() as tmp:
            policy.save_pretrained(tmp)
            ckpt = sum(p.stat().st_size for p in Path(tmp).iterdir())
        frames = [dict(obs, rgb=rng.integers(0, 256, obs["rgb"].shape, dtype=np.uint8)) for _ in range(8)]
        policy.reset()
        for f in frames[:cfg.history + 1]:  # fill the history and the instruction cache
            policy.act(f)
        step = iter(range(10**9))
        act_ms, act_cpu_ms = median_ms(lambda p=policy, f=frames, i=step: p.act(f[next(i) % len(f)]), acts)
        b = batch_size
        batch = {
            "rgb": torch.randint(0, 256, (b, cfg.history, 3, *cfg.image_size), dtype=torch.uint8),
            "obs_mask": torch.ones(b, cfg.history, dtype=torch.bool),
            "proprio": torch.zeros(b, cfg.history, cfg.proprio_dim),
            "actions": torch.zeros(b, cfg.horizon, cfg.action_dim),
            "action_mask": torch.ones(b, cfg.horizon, dtype=torch.bool),
            "instruction": [obs["instruction"]] * b,
        }
        policy.predict(batch)
        fwd_ms, fwd_cpu_ms = median_ms(lambda p=policy, x=batch: p.predict(x), forwards)
        policy.train()
        train_ms, train_cpu_ms = median_ms(lambda p=policy, x=batch: p.loss(x)[0].backward(), forwards)
        text = getattr(policy, "text", None)
        frozen = text.num_frozen_parameters() if hasattr(text, "num_frozen_parameters") else 0
        rows.append({"policy": name, "params": policy.num_parameters(), "frozen_text_params": frozen,
                     "checkpoint_mb": ckpt / 2**20, "act_ms": act_ms, "act_cpu_ms": act_cpu_ms,
                     "act_hz": 1000 / act_ms, "predict_ms_batch": fwd_ms,
                     "predict_cpu_ms_batch": fwd_cpu_ms, "train_step_ms_batch": train_ms,
                     "train_step_cpu_ms_batch": train_cpu_ms, "batch_size": b,
                     "image_size": image_size, "threads": threads,
                     "config": {k: v for k, v in cfg.to_dict().items() if k != "stats"}})
    return rows


def format_policy_rows(rows: list[dict]) -> str:
    b = rows[0]["batch_size"] if rows else 32
    lines = ["Times are medians, wall clock (CPU time in brackets: what the call costs on one free core).",
             "| policy | params (M) | frozen text encoder (M) | checkpoint (MB) | ms/act (batch 1) | act Hz "
             f"| ms/forward (batch {b}) | ms/loss+backward (batch {b}) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['params'] / 1e6:.2f} | {r['frozen_text_params'] / 1e6:.1f} | "
                     f"{r['checkpoint_mb']:.1f} | {r['act_ms']:.1f} ({r['act_cpu_ms']:.1f}) | "
                     f"{r['act_hz']:.0f} ({1000 / max(r['act_cpu_ms'], 1e-6):.0f}) | "
                     f"{r['predict_ms_batch']:.0f} ({r['predict_cpu_ms_batch']:.0f}) | "
                     f"{r['train_step_ms_batch']:.0f} ({r['train_step_cpu_ms_batch']:.0f}) |")
    return "\n".join(lines)


def bench_train(config: str | None, overrides: list[str] = (), steps: int = 150, bare_threads: int | None = None
                ) -> dict:
    """Samples/s of the real training loop beside its limit, measured in one run.

    The real loop is ``vlagym train`` itself (its loader, workers, augmentation and threads as the config
    sets them) for ``steps`` steps, with validation off; its rate leaves out the first steps and the
    checkpoint writes. The limit is a bare loop of the same model: forward, backward and optimizer step
    over one batch already in memory, on ``bare_threads`` threads (default: every core). The ratio says
    how much of the machine the loop's data path leaves unused.
    """
    import os
    import tempfile

    import torch

    from vlagym.dataio.windows import DemoWindows
    from vlagym.policies import load_policy
    from vlagym.policies.train import collate, load_config, train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [*overrides, f"steps={steps}", "eval_every=0", f"save_every={steps}",
                                   f"out={tmp}/run"])
        t0, c0 = time.perf_counter(), time.process_time()
        summary = train(cfg, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        policy = load_policy(f"{tmp}/run/checkpoint/policy").train()
    history, horizon = policy.window()
    data = DemoWindows(cfg.data, history=history, horizon=horizon, augment=cfg.augment, max_demos=cfg.max_demos,
                       image_keys=policy.image_keys(), action_key=cfg.labels, label_keys=policy.label_keys())
    rng = np.random.default_rng(0)
    batch = collate([data[int(i)] for i in rng.integers(0, len(data), cfg.batch_size)])
    threads = bare_threads or os.cpu_count() or 1
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        params = [p for p in policy.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step() -> None:
            loss, _ = policy.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        n = max(10, steps // 5)
        t = time.perf_counter()
        for _ in range(n):
            step()
        bare = n * cfg.batch_size / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(previous)
    real = summary["samples_per_s"]
    return {"policy": cfg.policy, "batch_size": cfg.batch_size, "steps": steps, "threads": cfg.threads,
            "num_workers": cfg.num_workers, "preload": cfg.preload, "real_samples_per_s": real,
            "bare_samples_per_s": bare, "bare_threads": threads, "ratio": real / bare,
            "train_wall_s": wall, "train_process_cpu_s": cpu}


def format_train_row(r: dict) -> str:
    return (f"{r['policy']} batch {r['batch_size']}: real loop {r['real_samples_per_s']:.0f} samples/s "
            f"(threads={r['threads']}, num_workers={r['num_workers']}, preload={r['preload']}); bare "
            f"forward/backward on {r['bare_threads']} threads {r['bare_samples_per_s']:.0f} samples/s; ratio "
            f"{r['ratio']:.2f}. {r['steps']} steps took {r['train_wall_s']:.0f} s wall, "
            f"{r['train_process_cpu_s']:.0f} s CPU in this process")


def bench_policy_backends(policy_dir: str, env_id: str | None = None, backends: tuple[str, ...] | None = None,
                          calls: int = 100, threads: int = 1, episodes: int = 2, steps: int = 30) -> list[dict]:
    """Per-step latency (p50/p95 ms, Hz) of one saved policy's backends at batch 1 on ``threads`` threads:
    torch float, torch dynamic int8, ONNX Runtime float and ONNX Runtime static int8 (calibrated on the
    same expert rollouts it is timed on: ``episodes`` x at most ``steps`` observations on validation seeds of
    ``env_id``, default the env in the policy's env_args.json), with each backend's largest action
    difference from torch float. Pinned to one core, like the other benchmarks."""
    from vlagym.core.env_args import env_id_of
    from vlagym.core.io import read_json
    from vlagym.policies.compress.api import check_teacher
    from vlagym.policies.compress.benchmark import BACKENDS, backend_latencies
    from vlagym.policies.compress.calibration import rollout_observations, teacher_env_kwargs

    _pin_one_core()
    folder = check_teacher(policy_dir)
    if env_id is None:
        args = folder / "env_args.json"
        env_id = env_id_of(read_json(args)) if args.exists() else None
        if env_id is None:
            raise ValueError(f"{folder} has no env_args.json naming its env; pass env_id")
    episodes_obs = rollout_observations(env_id, episodes, max_steps=steps, env_kwargs=teacher_env_kwargs(folder))
    observations = [o for ep in episodes_obs for o in ep if o["instruction"] == episodes_obs[0][0]["instruction"]]
    rows = backend_latencies(folder, observations, episodes_obs, tuple(backends or BACKENDS), calls, threads)
    for r in rows:
        r.update(policy=str(policy_dir), env=env_id)
    return rows


def format_backend_rows(rows: list[dict]) -> str:
    lines = ["| backend | params (M) | folder (MB) | p50 ms | p95 ms | Hz | max action diff vs torch |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['params'] / 1e6:.2f} | {r['folder_mb']:.1f} | {r['p50_ms']:.2f} | "
                     f"{r['p95_ms']:.2f} | {r['hz']:.0f} | {r['max_action_diff']:.2g} |")
    return "\n".join(lines)
