"""Demonstration datasets on disk: HDF5 shards in robomimic's layout plus a manifest.

A dataset is a folder::

    manifest.json          provenance, env args, seeds, split, counts, shards, wall time
    stats.json             per-dimension action (and proprio) statistics for normalisation
    shard_00000.hdf5 ...   data/demo_<i>/{obs/<key>, actions, rewards, dones[, expert_actions][, labels/...]}
    staging/               episodes written but not yet merged into a shard (resume state)
    .lock                  held (``flock``) by the collection writing the folder; names its pid, host, command

Every write is atomic (write a temporary file, then ``os.replace``): an episode is either
fully on disk or absent. A shard records its demos' seeds (the ``seed`` attributes), so a
collection killed between writing a shard and deleting the staged files it holds removes those
staged files on resume instead of merging them twice; two demos with one seed in a dataset are
refused when it is indexed.

Format 2 (``FORMAT_VERSION``) stores per-demo CRC-32 checksums of every dataset's raw bytes
(demo attribute ``checksums``, JSON ``{"actions": "1a2b3c4d", "obs/rgb": ...}``), which
``verify`` checks after decoding every chunk. Format 1 datasets (no checksums) load as before;
``verify`` decodes them and says their checksums are absent.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vlagym.core.io import DatasetError, atomic_write_text, read_json  # noqa: F401  (read_json: re-exported)

SHARD_GLOB = "shard_*.hdf5"
REQUIRED = ("actions", "rewards", "dones")
FORMAT_VERSION = 2  # 1: no checksums; 2: per-demo CRC-32 of every dataset (attribute "checksums")
LOCK_NAME = ".lock"
# What h5py raises on a damaged file: OSError for a bad chunk or header, RuntimeError for some
# corrupt B-trees and object headers, KeyError/ValueError/TypeError for missing or garbled metadata.
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


class DatasetLocked(DatasetError):
    """Another process is writing the dataset folder; the message names it."""


@dataclass
class Trajectory:
    """What a dataset stores of an episode: ``obs[key]`` has one row per action taken
    (the observation the action was chosen from). ``expert_actions``: the noiseless action the
    expert planned at each step (``Expert.last_plan``), when the agent is a scripted expert.
    ``labels``: the privileged labels beside each observation (``vlagym.envs.labels``; key -> (T, ...)),
    when the env reports them."""

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    expert_actions: np.ndarray | None = None
    labels: dict[str, np.ndarray] | None = None


@contextmanager
def reading(path: str | os.PathLike, demo: str | None = None, key: str | None = None) -> Iterator[None]:
    """Turn an h5py error inside the block into a ``DatasetError`` naming file, demo and key."""
    try:
        yield
    except DatasetError:
        raise
    except H5_ERRORS as e:
        where = f"{path}" + (f" [{demo}]" if demo else "") + (f" {key}" if key else "")
        raise DatasetError(f"{where}: cannot read ({type(e).__name__}: {e}); the file is corrupt or truncated "
                           f"(`vlagym dataset verify` lists every bad chunk)") from e


@contextmanager
def locked(root: str | os.PathLike, what: str = "collect") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``root/.lock`` for the block, or raise ``DatasetLocked``.

    The holder writes its pid, host and command into the file, so a refused process can say who
    holds the folder. The lock goes with the process (a killed holder releases it).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetLocked(f"{root} is being written by another process ({_holder(fd, path)}); wait for it "
                                f"to finish or use another --out") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv), "what": what,
                "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int, path: Path) -> str:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on host {h['host']}, `{h['command']}`, since {h['since']}"
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"{path} says {text!r}" if text else f"it has not yet written its pid into {path}"


# --- writing ------------------------------------------------------------------------------------------------
def checksum(arr: np.ndarray, crc: int = 0) -> int:
    """CRC-32 of the array's raw C-order bytes (continuing ``crc``: row blocks chain to the whole)."""
    return zlib.crc32(np.ascontiguousarray(arr).tobytes(), crc)


def _write_demo(group: h5py.Group, traj: Trajectory, attrs: dict[str, Any], compression: str | None) -> None:
    sums = {}

    def put(parent: h5py.Group, name: str, arr, **kwargs) -> None:
        ds = parent.create_dataset(name, data=arr, **kwargs)
        sums[ds.name.split("/", 3)[-1]] = f"{checksum(np.asarray(arr, dtype=ds.dtype)):08x}"

    obs = group.create_group("obs")
    for key, arr in traj.obs.items():
        if arr.dtype == np.uint8 and arr.ndim == 4:  # images: one chunk per frame, compressed
            put(obs, key, arr, chunks=(1, *arr.shape[1:]), compression=compression)
        else:
            put(obs, key, arr)
    put(group, "actions", traj.actions)
    put(group, "rewards", traj.rewards)
    put(group, "dones", traj.dones)
    if traj.expert_actions is not None:  # the scripted expert's noiseless labels
        put(group, "expert_actions", traj.expert_actions)
    if traj.labels:  # labels/<role>/pos, labels/<role>/<camera>/{uv,visible}
        labels = group.create_group("labels")
        for key, arr in traj.labels.items():
            put(labels, key, arr)
    group.attrs["num_samples"] = len(traj.actions)
    group.attrs["checksums"] = json.dumps(sums, sort_keys=True)
    for k, v in attrs.items():
        group.attrs[k] = v


def write_episode_file(path: Path, traj: Trajectory, attrs: dict[str, Any], env_args: dict[str, Any],
                       compression: str | None = "gzip") -> None:
    """One episode as a one-demo file in the shard layout, written atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs["format_version"] = FORMAT_VERSION
        data.attrs["total"] = len(traj.actions)
        _write_demo(data.create_group("demo_0"), traj, attrs, compression)
    os.replace(tmp, path)


def merge_into_shard(shard: Path, episode_files: list[Path], env_args: dict[str, Any]) -> None:
    """Copy staged one-demo files into a new shard (atomically), then delete them.

    A kill between the two leaves staged files whose seeds the shard already holds;
    ``drop_merged_staged`` removes them before a resumed collection counts or merges anything.
    """
    tmp = shard.with_name(f".{shard.name}.tmp")
    total = 0
    with h5py.File(tmp, "w") as out:
        data = out.create_group("data")
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs["format_version"] = FORMAT_VERSION
        for i, ep in enumerate(episode_files):
            with reading(ep, "demo_0"), h5py.File(ep, "r") as src:
                src.copy(src["data/demo_0"], data, name=f"demo_{i}")
                total += int(src["data/demo_0"].attrs["num_samples"])
        data.attrs["total"] = total
    os.replace(tmp, shard)
    for ep in episode_files:
        ep.unlink()


def staged_seed(path: Path) -> int:
    """The seed in a staged episode's name (``ep_000000012.hdf5`` -> 12)."""
    return int(path.stem.split("_")[1])


def drop_merged_staged(root: Path) -> list[Path]:
    """Delete staged episodes whose seeds a shard already holds (a merge killed before its unlinks);
    returns the deleted paths."""
    staged = sorted((root / "staging").glob("ep_*.hdf5"))
    if not staged or not any(root.glob(SHARD_GLOB)):
        return []
    merged = {ref.seed for ref in index_demos(root)}
    dropped = [p for p in staged if staged_seed(p) in merged]
    for p in dropped:
        p.unlink()
    return dropped


# --- reading ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoRef:
    """Where one demonstration lives."""

    path: Path
    key: str  # "demo_3"
    length: int
    seed: int
    instruction: str
    success: bool = True
    source: str = "expert"
    """Who drove the episode: the scripted expert, or a policy under DAgger (labels from the expert)."""


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

    Raises ``DatasetError`` naming the file and demo at fault for a truncated or corrupt file, and
    for a seed stored twice within one dataset folder (a merge that was not cleaned up).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    refs = []
    for root in paths:
        first: dict[int, DemoRef] = {}
        for path in shard_paths(root):
            with reading(path), h5py.File(path, "r") as f:
                if "data" not in f:
                    raise DatasetError(f"{path}: no 'data' group (not a robomimic-layout file)")
                for key in sorted(f["data"].keys(), key=_demo_number):
                    with reading(path, key):
                        demo = f["data"][key]
                        if validate:
                            _check_demo(path, key, demo)
                        ref = DemoRef(path, key, int(demo.attrs["num_samples"]), int(demo.attrs["seed"]),
                                      str(demo.attrs["instruction"]), bool(demo.attrs.get("success", True)),
                                      str(demo.attrs.get("source", "expert")))
                    if ref.seed in first:
                        other = first[ref.seed]
                        raise DatasetError(f"{path} [{key}]: seed {ref.seed} is also stored in {other.path} "
                                           f"[{other.key}]; the dataset holds a demo twice")
                    first[ref.seed] = ref
                    refs.append(ref)
    return refs


def _demo_number(key: str) -> int:
    try:
        return int(key.split("_")[-1])
    except ValueError:
        raise ValueError(f"unexpected group {key!r} in 'data' (demos are named demo_<i>)") from None


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
    for k, ds in label_datasets(demo).items():
        if ds.shape[0] != n:
            raise DatasetError(f"{where}: labels/{k} has {ds.shape[0]} rows, actions has {n}")
    for attr in ("num_samples", "instruction", "seed", "success"):
        if attr not in demo.attrs:
            raise DatasetError(f"{where}: missing attribute {attr!r}")
    if int(demo.attrs["num_samples"]) != n:
        raise DatasetError(f"{where}: num_samples={demo.attrs['num_samples']} but {n} actions")
    # Touch the last image chunk: a truncated file fails here rather than mid-training.
    for k, ds in demo["obs"].items():
        try:
            ds[n - 1]
        except H5_ERRORS as e:
            raise DatasetError(f"{where}: obs/{k} unreadable ({e})") from e


def label_datasets(demo: h5py.Group) -> dict[str, h5py.Dataset]:
    """A demo's privileged labels (``vlagym.envs.labels``) by flat key, e.g. ``object/rgb/uv``; {} when it
    has none (datasets collected before labels existed)."""
    if "labels" not in demo:
        return {}
    out: dict[str, h5py.Dataset] = {}
    demo["labels"].visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset)
                              else None)
    return out


def load_demo(ref: DemoRef) -> dict[str, Any]:
    """The whole demo as numpy arrays (obs dict, actions, rewards, dones, attrs)."""
    with reading(ref.path, ref.key), h5py.File(ref.path, "r") as f:
        d = f["data"][ref.key]
        out: dict[str, Any] = {"obs": {}}
        for k in d["obs"]:
            with reading(ref.path, ref.key, f"obs/{k}"):
                out["obs"][k] = d["obs"][k][()]
        for k in ("actions", "rewards", "dones", "expert_actions"):
            if k in d:
                with reading(ref.path, ref.key, k):
                    out[k] = d[k][()]
        labels = label_datasets(d)
        if labels:
            out["labels"] = {}
            for k, v in labels.items():
                with reading(ref.path, ref.key, f"labels/{k}"):
                    out["labels"][k] = v[()]
        out["attrs"] = dict(d.attrs)
        return out


def env_args(root: str | os.PathLike) -> dict[str, Any]:
    """The ``env_args`` a dataset (its first shard) or a single HDF5 file records."""
    path = shard_paths(root)[0] if Path(root).is_dir() else Path(root)
    return file_env_args(path)


def file_env_args(path: Path) -> dict[str, Any]:
    with reading(path, key="data.attrs['env_args']"), h5py.File(path, "r") as f:
        text = f["data"].attrs["env_args"]
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: data.attrs['env_args'] is not valid JSON ({e})") from e


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; was the collection finished?")
    return read_json(path)


def iter_arrays(refs: list[DemoRef], key: str) -> Iterator[np.ndarray]:
    """``key`` of every demo that has it (a demo-level dataset such as actions, or an observation)."""
    for ref in refs:
        with reading(ref.path, ref.key, key), h5py.File(ref.path, "r") as f:
            d = f["data"][ref.key]
            if key in d:
                arr = d[key][()]
            elif key in d["obs"]:
                arr = d["obs"][key][()]
            else:
                continue
        yield arr


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


# --- verifying ----------------------------------------------------------------------------------------------
@dataclass
class ShardCheck:
    """What ``verify`` found in one shard."""

    path: Path
    demos: int = 0
    without_checksums: int = 0  # demos written before format 2: decoded, but nothing to compare with
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(root: str | os.PathLike) -> list[ShardCheck]:
    """Decode every chunk of every dataset in every shard and compare the stored checksums.

    Never raises for a damaged shard: each problem is a line naming file, demo, key and (for a
    chunk that does not decode) the frame.
    """
    checks = []
    for path in shard_paths(root):
        check = ShardCheck(path)
        checks.append(check)
        try:
            f = h5py.File(path, "r")
        except H5_ERRORS as e:
            check.problems.append(f"{path}: cannot open ({type(e).__name__}: {e})")
            continue
        with f:
            try:
                keys = sorted(f["data"].keys(), key=_demo_number)
            except H5_ERRORS as e:
                check.problems.append(f"{path}: cannot list demos ({type(e).__name__}: {e})")
                continue
            for key in keys:
                check.demos += 1
                check.problems += _verify_demo(path, key, f, check)
    return checks


def _verify_demo(path: Path, key: str, f: h5py.File, check: ShardCheck) -> list[str]:
    where = f"{path} [{key}]"
    try:
        demo = f["data"][key]
        _check_demo(path, key, demo)
        names = [n for n in ("actions", "rewards", "dones", "expert_actions") if n in demo]
        names += [f"obs/{k}" for k in demo["obs"]]
        sums = json.loads(demo.attrs["checksums"]) if "checksums" in demo.attrs else None
    except DatasetError as e:
        return [str(e)]
    except (*H5_ERRORS, json.JSONDecodeError) as e:
        return [f"{where}: cannot read its structure ({type(e).__name__}: {e})"]
    if sums is None:
        check.without_checksums += 1
    problems = []
    for name in names:
        crc, bad = _decode(demo[name])
        for frame, err in bad:
            problems.append(f"{where} {name} frame {frame}: does not decode ({err})")
        if sums is None or bad:
            continue
        if name not in sums:
            problems.append(f"{where} {name}: no stored checksum (the demo's checksums cover {sorted(sums)})")
        elif sums[name] != f"{crc:08x}":
            problems.append(f"{where} {name}: checksum mismatch (stored {sums[name]}, data {crc:08x}); "
                            f"the bytes changed after collection")
    return problems


def _decode(ds: h5py.Dataset) -> tuple[int, list[tuple[int, str]]]:
    """CRC-32 of a dataset read block by block along its first axis (one chunk of rows at a time),
    and the first row of every block that fails to decode."""
    n = ds.shape[0] if ds.shape else 1
    step = ds.chunks[0] if ds.chunks else max(n, 1)
    crc, bad = 0, []
    for start in range(0, n, step):
        try:
            block = ds[start:start + step] if ds.shape else ds[()]
        except H5_ERRORS as e:
            bad.append((start, f"{type(e).__name__}: {e}"))
            continue
        crc = checksum(block, crc)
    return crc, bad
