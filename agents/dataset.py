"""Demonstration datasets on disk: HDF5 shards in robomimic's layout plus a manifest.

A dataset is a folder::

    manifest.json          provenance, env args, seeds, split, counts, shards, wall time
    stats.json             per-dimension action (and proprio) statistics for normalisation
    shard_00000.hdf5 ...   data/demo_<i>/{obs/<key>, actions, rewards, dones[, expert_actions]}
    staging/               episodes written but not yet merged into a shard (resume state)

Every write is atomic (write a temporary file, then ``os.replace``): an episode is either
fully on disk or absent, so a killed collection resumes without losing or duplicating one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vlagym.agents.rollout import Trajectory

SHARD_GLOB = "shard_*.hdf5"
REQUIRED = ("actions", "rewards", "dones")
SPLIT_SEED_START = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SPLIT_SIZE = 1_000_000


class DatasetError(RuntimeError):
    """A dataset file is missing, truncated or inconsistent; the message names file and demo."""


def split_of(seed: int) -> str:
    for name, start in SPLIT_SEED_START.items():
        if start <= seed < start + SPLIT_SIZE:
            return name
    raise ValueError(f"seed {seed} is outside every split range {SPLIT_SEED_START} (size {SPLIT_SIZE})")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- writing ------------------------------------------------------------------------------------------------
def _write_demo(group: h5py.Group, traj: Trajectory, attrs: dict[str, Any], compression: str | None) -> None:
    obs = group.create_group("obs")
    for key, arr in traj.obs.items():
        if arr.dtype == np.uint8 and arr.ndim == 4:  # images: one chunk per frame, compressed
            obs.create_dataset(key, data=arr, chunks=(1, *arr.shape[1:]), compression=compression)
        else:
            obs.create_dataset(key, data=arr)
    group.create_dataset("actions", data=traj.actions)
    group.create_dataset("rewards", data=traj.rewards)
    group.create_dataset("dones", data=traj.dones)
    if traj.expert_actions is not None:  # the scripted expert's noiseless labels
        group.create_dataset("expert_actions", data=traj.expert_actions)
    group.attrs["num_samples"] = len(traj.actions)
    for k, v in attrs.items():
        group.attrs[k] = v


def write_episode_file(path: Path, traj: Trajectory, attrs: dict[str, Any], env_args: dict[str, Any],
                       compression: str | None = "gzip") -> None:
    """One episode as a one-demo file in the shard layout, written atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs["total"] = len(traj.actions)
        _write_demo(data.create_group("demo_0"), traj, attrs, compression)
    os.replace(tmp, path)


def merge_into_shard(shard: Path, episode_files: list[Path], env_args: dict[str, Any]) -> None:
    """Copy staged one-demo files into a new shard (atomically), then delete them."""
    tmp = shard.with_name(f".{shard.name}.tmp")
    total = 0
    with h5py.File(tmp, "w") as out:
        data = out.create_group("data")
        data.attrs["env_args"] = json.dumps(env_args)
        for i, ep in enumerate(episode_files):
            with h5py.File(ep, "r") as src:
                src.copy(src["data/demo_0"], data, name=f"demo_{i}")
                total += int(src["data/demo_0"].attrs["num_samples"])
        data.attrs["total"] = total
    os.replace(tmp, shard)
    for ep in episode_files:
        ep.unlink()


# --- reading ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoRef:
    """Where one demonstration lives."""

    path: Path
    key: str  # "demo_3"
    length: int
    seed: int
    instruction: str


def shard_paths(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset at {root}")
    paths = sorted(root.glob(SHARD_GLOB))
    if not paths:
        raise FileNotFoundError(f"{root} holds no {SHARD_GLOB} files; is it a vlagym dataset?")
    return paths


def index_demos(paths: list[Path] | str | os.PathLike, validate: bool = True) -> list[DemoRef]:
    """List every demo in the given shards (or dataset folders), checking their structure.

    Raises ``DatasetError`` naming the file and demo at fault for a truncated or corrupt file.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = [p for root in paths for p in shard_paths(root)]
    refs = []
    for path in files:
        try:
            with h5py.File(path, "r") as f:
                if "data" not in f:
                    raise DatasetError(f"{path}: no 'data' group (not a robomimic-layout file)")
                for key in sorted(f["data"].keys(), key=lambda k: int(k.split("_")[-1])):
                    demo = f["data"][key]
                    if validate:
                        _check_demo(path, key, demo)
                    refs.append(DemoRef(path, key, int(demo.attrs["num_samples"]), int(demo.attrs["seed"]),
                                        str(demo.attrs["instruction"])))
        except DatasetError:
            raise
        except (OSError, KeyError, ValueError) as e:
            raise DatasetError(f"{path}: cannot read ({e}); the file is corrupt or truncated") from e
    return refs


def _check_demo(path: Path, key: str, demo: h5py.Group) -> None:
    where = f"{path} [{key}]"
    for name in REQUIRED:
        if name not in demo:
            raise DatasetError(f"{where}: missing dataset {name!r}")
    if "obs" not in demo:
        raise DatasetError(f"{where}: missing 'obs' group")
    n = demo["actions"].shape[0]
    for name in ("rewards", "dones", "expert_actions"):
        if name in demo and demo[name].shape[0] != n:
            raise DatasetError(f"{where}: {name} has {demo[name].shape[0]} rows, actions has {n}")
    for k, ds in demo["obs"].items():
        if ds.shape[0] != n:
            raise DatasetError(f"{where}: obs/{k} has {ds.shape[0]} rows, actions has {n}")
    for attr in ("num_samples", "instruction", "seed", "success"):
        if attr not in demo.attrs:
            raise DatasetError(f"{where}: missing attribute {attr!r}")
    if int(demo.attrs["num_samples"]) != n:
        raise DatasetError(f"{where}: num_samples={demo.attrs['num_samples']} but {n} actions")
    # Touch the last image chunk: a truncated file fails here rather than mid-training.
    for k, ds in demo["obs"].items():
        try:
            ds[n - 1]
        except (OSError, ValueError) as e:
            raise DatasetError(f"{where}: obs/{k} unreadable ({e})") from e


def load_demo(ref: DemoRef) -> dict[str, Any]:
    """The whole demo as numpy arrays (obs dict, actions, rewards, dones, attrs)."""
    with h5py.File(ref.path, "r") as f:
        d = f["data"][ref.key]
        return {
            "obs": {k: v[()] for k, v in d["obs"].items()},
            "actions": d["actions"][()],
            "rewards": d["rewards"][()],
            "dones": d["dones"][()],
            **({"expert_actions": d["expert_actions"][()]} if "expert_actions" in d else {}),
            "attrs": dict(d.attrs),
        }


def env_args(root: str | os.PathLike) -> dict[str, Any]:
    with h5py.File(shard_paths(root)[0], "r") as f:
        return json.loads(f["data"].attrs["env_args"])


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; was the collection finished?")
    return json.loads(path.read_text())


def iter_arrays(refs: list[DemoRef], key: str) -> Iterator[np.ndarray]:
    """``key`` of every demo that has it (a demo-level dataset such as actions, or an observation)."""
    for ref in refs:
        with h5py.File(ref.path, "r") as f:
            d = f["data"][ref.key]
            if key in d:
                yield d[key][()]
            elif key in d["obs"]:
                yield d["obs"][key][()]


def compute_stats(refs: list[DemoRef], keys: tuple[str, ...] = ("actions", "expert_actions", "proprio")
                  ) -> dict[str, dict[str, list[float]]]:
    """Per-dimension mean, std, min, max of actions (executed and, where stored, the expert's
    noiseless ones) and proprio over all demos."""
    out = {}
    for key in keys:
        arrays = list(iter_arrays(refs, key))
        if not arrays:
            continue
        x = np.concatenate(arrays).astype(np.float64)
        out[key] = {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "min": x.min(0).tolist(),
                    "max": x.max(0).tolist(), "count": int(len(x))}
    return out
