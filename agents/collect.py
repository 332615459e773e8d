"""Parallel, resumable collection of expert demonstrations (``vlagym collect``).

Seeds run upwards from the split's start (train 0, val 1e6, test 2e6). Only successful
episodes are kept; the dataset is the first N successful seeds, whatever order the worker
processes finish in, so an interrupted and resumed run ends with the same episodes as an
uninterrupted one. Episodes are written through the dataset format interface (``CollectConfig.format``,
robomimic HDF5 by default): each finished episode is staged as its own file (atomically, by the worker);
staged episodes are committed into shards of ``shard_size``. Rerunning the same command resumes.

A collection holds the folder's lock (``dataset.locked``) throughout, so a second one into the
same folder is refused with the first one's pid, host and command. A resume checks its settings
against ``request.json`` and, since that file can be lost, against the ``env_args`` and ``noise``
that every shard and staged episode records, and refuses naming the keys that differ.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

import vlagym
from vlagym.agents.backends import Backend
from vlagym.agents.rollout import _fault_hook, _worker_env, _worker_policy, expert_agent, run_episode
from vlagym.core.io import atomic_write_text, read_json
from vlagym.core.resume import settings_differences
from vlagym.core.splits import SPLIT_SEED_START, SPLIT_SIZE, split_of
from vlagym.dataio.dataset import compute_stats, locked
from vlagym.dataio.format import DatasetWriter, check_format, dataset_writer

FAILED = "failed"
"""Staging marker of a seed whose episode failed (and was not kept): a resume does not retry it."""


@dataclass
class CollectConfig:
    """What to collect."""

    env: str
    """Registered env id."""
    episodes: int
    """Successful episodes to keep."""
    out: str
    """Dataset folder."""
    workers: int = 1
    """Worker processes."""
    executor: str = "local"
    """Where the workers run: local (processes here) or ray (actors on a Ray cluster; the dataset is the same)."""
    address: str | None = None
    """With ``executor=ray``: the cluster's address (``HOST:PORT``, ``ray://HOST:10001`` or ``auto``); none starts
    a single-node cluster here. The out folder must be on a filesystem every node sees."""
    split: str = "train"
    """Seed split: train, val or test (disjoint seed ranges)."""
    seed_start: int | None = None
    """First seed (default: the split's start). Must lie inside the split's range."""
    noise: float = 0.0
    """Std of Gaussian noise on the expert's continuous actions (the executed action is stored)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for gym.make (image_size, wrist_camera, ...)."""
    shard_size: int = 50
    """Episodes per shard."""
    compression: str | None = "gzip"
    """Image compression, in the format's terms (robomimic HDF5: gzip, lzf or None)."""
    format: str = "robomimic_hdf5"
    """The dataset format to write (``vlagym.dataio.format.formats()``; docs/adding-a-dataset-format.md)."""
    level: str | None = None
    """Generalization level (``vlagym.envs.levels``) every episode is drawn at; recorded in env_args.
    The train split takes only ``train`` (or None, the union of all levels, as before levels existed)."""
    driver: str | None = None
    """A policy run folder that acts instead of the expert (DAgger): the expert still labels every
    state (``expert_actions``) and acts itself with probability ``beta`` at each step."""
    beta: float = 0.0
    """With ``driver``: the probability that the expert's action is executed at a step."""
    intervene_after: int = 0
    """With ``driver``: once the robot has stood still this many steps (the policy stalls), the expert
    takes over for the rest of the episode, so the data show the way out as well (HG-DAgger's
    intervention, triggered by the stall). 0: never."""
    keep_failures: bool = False
    """Keep unsuccessful episodes too (DAgger wants the states where the policy went wrong)."""
    tags: dict[str, Any] = field(default_factory=dict)
    """Attributes stored on every demo beside seed and instruction (DAgger: source and round)."""

    def __post_init__(self) -> None:
        from vlagym.envs.levels import check_level

        check_level(self.level)
        if self.split == "train" and self.level not in (None, "train"):
            raise ValueError(f"level {self.level!r} draws held-out episodes; training seeds are drawn only from "
                             f"the training side of every split: use --level train (or --split val/test)")
        if self.level is not None:
            if self.env_kwargs.get("level", self.level) != self.level:
                raise ValueError(f"level given twice: --level {self.level} and env kwarg level="
                                 f"{self.env_kwargs['level']}")
            self.env_kwargs = {**self.env_kwargs, "level": self.level}
        elif self.env_kwargs.get("level") is not None:
            self.level = self.env_kwargs["level"]
            self.__post_init__()
            return
        if self.split not in SPLIT_SEED_START:
            raise ValueError(f"split must be one of {sorted(SPLIT_SEED_START)}, got {self.split!r}")
        if self.seed_start is None:
            self.seed_start = SPLIT_SEED_START[self.split]
        if split_of(self.seed_start) != self.split:
            raise ValueError(f"seed_start {self.seed_start} is not in the {self.split} split "
                             f"[{SPLIT_SEED_START[self.split]}, {SPLIT_SEED_START[self.split] + SPLIT_SIZE})")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {self.beta}")
        if self.driver is None and (self.beta or self.intervene_after):
            raise ValueError("beta and intervene_after mix the expert into a driver policy's rollouts; "
                             "they need a driver")
        check_format(self.format)
        self.backend()

    def backend(self) -> Backend:
        return Backend(self.executor, self.address)

    def writer(self) -> DatasetWriter:
        return dataset_writer(self.out, self.format, self.compression)


class MixedAgent:
    """DAgger's rollout agent: ``policy`` acts, the expert labels every state with its noiseless
    plan (``last_plan``) and its own action is executed instead with probability ``beta``."""

    def __init__(self, env: gym.Env, policy, beta: float, seed: int, intervene_after: int = 0) -> None:
        self.expert = env.unwrapped.task.expert()
        self.policy, self.beta, self.intervene_after = policy, beta, intervene_after
        self.rng = np.random.default_rng([seed, 11])
        self.last_plan = None
        self.t, self.still, self.previous, self.intervened_at = 0, 0, None, None

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs, info):
        planned = self.expert.act(obs, info)
        action = self.policy.act(obs, info)  # every step, so its frame history and action queue stay whole
        self.last_plan = self.expert.last_plan
        self.t += 1
        if self.intervene_after and self.intervened_at is None:
            proprio = np.asarray(obs["proprio"], dtype=np.float64)
            moved = self.previous is None or np.abs(proprio - self.previous).max() > STILL_PROPRIO
            self.still, self.previous = (0 if moved else self.still + 1), proprio
            if self.still >= self.intervene_after:
                self.intervened_at = self.t
        if self.intervened_at is not None:
            return planned
        return planned if self.beta and self.rng.random() < self.beta else action


STILL_PROPRIO = 0.002
"""A step whose proprio changes by less than this (metres, radians, in any component) is standing still."""


def _collect_one(env_id: str, env_kwargs: tuple, seed: int, noise: float, writer: DatasetWriter,
                 driver: str | None = None, beta: float = 0.0,
                 keep_failures: bool = False, tags: tuple = (), intervene_after: int = 0
                 ) -> tuple[int, bool, int]:
    """Worker: run one episode (the expert's, or ``driver``'s with expert labels); stage it if it
    succeeded or ``keep_failures``. Returns (seed, success, steps)."""
    _fault_hook()
    env = _worker_env(env_id, env_kwargs)
    if driver is None:
        make = lambda e: expert_agent(e, noise)  # noqa: E731
    else:
        policy = _worker_policy(driver)
        made: list[MixedAgent] = []

        def make(e):
            made.append(MixedAgent(e, policy, beta, seed, intervene_after))
            return made[-1]
    ep = run_episode(env, seed, make, keep_trajectory=True)
    if ep.success or keep_failures:
        attrs = {"instruction": ep.instruction, "seed": seed, "success": ep.success, "noise": noise,
                 "source": "expert" if driver is None else "dagger", **dict(tags)}
        if driver is not None and intervene_after:
            attrs["intervened"] = made[-1].intervened_at is not None
        writer.stage(seed, ep.trajectory, attrs, _env_args(env_id, dict(env_kwargs)))
    else:
        writer.staging.mark(seed, FAILED)
    return seed, ep.success, ep.steps


def _env_args(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    spec = gym.spec(env_id)
    return {"env_name": env_id, "type": "vlagym", "env_kwargs": {**spec.kwargs, **kwargs},
            "max_episode_steps": spec.max_episode_steps}


def _done_seeds(writer: DatasetWriter) -> tuple[set[int], set[int]]:
    """Seeds already kept (in shards or staged) and seeds that failed."""
    kept = {ref.seed for ref in writer.committed()} | set(writer.staging.seeds())
    return kept, writer.staging.marked(FAILED)


def _check_settings(root: Path, cfg: CollectConfig, request: dict[str, Any], writer: DatasetWriter) -> None:
    """Refuse to resume into a folder collected with other settings (request.json, and the env args
    and noise stored in every shard and staged episode, which survive a lost request.json)."""
    request_path = root / "request.json"
    if request_path.exists():
        diff = settings_differences(read_json(request_path), json.loads(json.dumps(request)))
        if diff:
            raise ValueError(f"{root} was collected with different settings: {'; '.join(diff)}; "
                             f"use another --out or the same options to resume")
    wanted = json.loads(json.dumps(_env_args(cfg.env, cfg.env_kwargs)))
    for stored in writer.stored():
        diff = settings_differences(stored.env_args, wanted)
        noises = {float(attrs.get("noise", 0.0)) for attrs in stored.episodes}
        diff += [f"noise (stored {n!r}, requested {cfg.noise!r})" for n in sorted(noises) if n != cfg.noise]
        if diff:
            raise ValueError(f"{stored.path} was collected with different settings: {'; '.join(diff)}; "
                             f"use another --out or the same options to resume")


def collect(cfg: CollectConfig) -> dict[str, Any]:
    """Collect (or resume collecting) ``cfg.episodes`` successful demos; returns the manifest.

    Raises ``DatasetLocked`` when another process is collecting into the same folder.
    """
    from vlagym.envs import check_env_id

    check_env_id(cfg.env)
    cfg.backend().check()
    with locked(cfg.out, "collect"):
        return _collect(cfg)


def _collect(cfg: CollectConfig) -> dict[str, Any]:
    from vlagym.core.provenance import provenance

    root = Path(cfg.out)
    writer = cfg.writer()
    writer.staging.dir.mkdir(parents=True, exist_ok=True)
    request = {k: v for k, v in asdict(cfg).items() if k not in ("workers", "out", "executor", "address")}
    if cfg.level is None:  # datasets from before levels existed resume unchanged
        request.pop("level")
    for key, default in (("driver", None), ("beta", 0.0), ("keep_failures", False), ("tags", {}),
                         ("intervene_after", 0)):
        if request[key] == default:  # nor do those collected before DAgger existed
            request.pop(key)
    if request["format"] == "robomimic_hdf5":  # nor those from before formats were pluggable
        request.pop("format")
    _check_settings(root, cfg, request, writer)
    merged = writer.repair()
    if merged:
        print(f"collect: removed {len(merged)} staged episodes a shard already holds (seeds "
              f"{merged[0]}..{merged[-1]}; an earlier merge was interrupted)", file=sys.stderr)

    t0 = time.time()
    kept, failed = _done_seeds(writer)
    limit = cfg.seed_start + SPLIT_SIZE
    outside = sorted(s for s in kept if not cfg.seed_start <= s < limit)
    if outside:
        raise ValueError(f"{root} holds seeds {outside[:5]}{'...' if len(outside) > 5 else ''} outside the "
                         f"requested {cfg.split} range [{cfg.seed_start}, {limit}); use another --out or the "
                         f"same options to resume")
    request_path = root / "request.json"
    if not request_path.exists():  # only once every check passed: a refused run must not record its settings
        atomic_write_text(request_path, json.dumps(request, indent=2))
    failed |= set(_previous_manifest(root).get("dropped_seeds", []))
    env_kwargs = tuple(sorted(cfg.env_kwargs.items()))
    next_seed = cfg.seed_start
    bar = tqdm(total=cfg.episodes, initial=min(len(kept), cfg.episodes), desc=f"collect {cfg.env}",
               unit="ep", dynamic_ncols=True)

    def enough() -> bool:
        return len(kept) >= cfg.episodes

    with cfg.backend().pool(max(1, cfg.workers)) as pool:
        running = {}
        while not enough() or running:
            while not enough() and len(running) < 2 * max(1, cfg.workers):
                while next_seed in kept or next_seed in failed:
                    next_seed += 1
                if next_seed >= limit:
                    raise RuntimeError(f"ran out of {cfg.split} seeds before {cfg.episodes} successes")
                fut = pool.submit(_collect_one, cfg.env, env_kwargs, next_seed, cfg.noise, writer,
                                  cfg.driver, cfg.beta, cfg.keep_failures,
                                  tuple(sorted(cfg.tags.items())), cfg.intervene_after)
                running[fut] = next_seed
                next_seed += 1
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                seed = running.pop(fut)
                _, success, _ = fut.result()
                (kept if success or cfg.keep_failures else failed).add(seed)
                bar.n = min(len(kept), cfg.episodes)
                bar.refresh()
                bar.set_postfix(kept=min(len(kept), cfg.episodes), dropped=len(failed))
    bar.close()

    # The dataset is the first N successful seeds: drop any extra a worker finished late.
    chosen = sorted(kept)[: cfg.episodes]
    for seed in sorted(kept)[cfg.episodes:]:
        writer.staging.discard(seed)
    _merge_staged(root, cfg)
    refs = writer.committed()
    writer.write_stats(compute_stats(refs))
    dropped = sorted(s for s in failed if s < max(chosen))
    previous_wall = _previous_manifest(root).get("wall_time_s", 0.0)
    manifest = {
        **provenance(),
        "vlagym_version": vlagym.__version__,
        **({"format": cfg.format} if cfg.format != "robomimic_hdf5" else {}),
        "format_version": writer.format_version(),
        "env_args": _env_args(cfg.env, cfg.env_kwargs),
        "expert": f"{cfg.env} scripted expert",
        **({"driver": cfg.driver, "beta": cfg.beta, "tags": cfg.tags} if cfg.driver else {}),
        "noise": cfg.noise,
        "split": cfg.split,
        "level": cfg.level,
        "seed_range": [cfg.seed_start, max(chosen)],
        "episodes": len(refs),
        "frames": int(sum(r.length for r in refs)),
        "dropped_failures": len(dropped),
        "dropped_seeds": dropped,
        "shards": [p.name for p in writer.shards()],
        "wall_time_s": round(previous_wall + time.time() - t0, 1),
    }
    writer.write_manifest(manifest)
    return manifest


def _previous_manifest(root: Path) -> dict[str, Any]:
    p = root / "manifest.json"
    return read_json(p) if p.exists() else {}


def _merge_staged(root: Path, cfg: CollectConfig) -> None:
    """Commit staged episodes (in seed order) into shards of ``shard_size`` demos; drop the failure markers."""
    writer = cfg.writer()
    writer.commit(_env_args(cfg.env, cfg.env_kwargs), cfg.shard_size)
    writer.staging.clear(tags=(FAILED,))
