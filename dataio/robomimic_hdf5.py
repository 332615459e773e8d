"""The ``robomimic_hdf5`` dataset format: HDF5 shards in robomimic's layout plus a manifest.

A dataset is a folder::

    manifest.json          provenance, env args, seeds, split, counts, shards, wall time
    stats.json             per-dimension action (and proprio) statistics for normalisation
    shard_00000.hdf5 ...   data/demo_<i>/{obs/<key>, actions, rewards, dones[, expert_actions][, labels/...]}
    staging/               episodes written but not yet merged into a shard (resume state)
    .lock                  held (``flock``) by the collection writing the folder; names its pid, host, command

A single shard file is a dataset too (``DemoWindows`` and ``vlagym bench data`` accept one).

Every write is atomic (``dataio.staging.atomic_file``): an episode is either fully on disk or absent. A
shard records its demos' seeds (the ``seed`` attributes), so a collection killed between writing a shard
and deleting the staged files it holds removes those staged files on resume (``DatasetWriter.repair``)
instead of merging them twice; two demos with one seed in a dataset are refused when it is indexed.

Format 2 (``FORMAT_VERSION``) stores per-demo CRC-32 checksums of every dataset's raw bytes
(demo attribute ``checksums``, JSON ``{"actions": "1a2b3c4d", "obs/rgb": ...}``), which
``verify`` checks after decoding every chunk. Format 1 datasets (no checksums) load as before;
``verify`` decodes them and says their checksums are absent.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vlagym.core.io import DatasetError
from vlagym.dataio.format import (
    ARRAYS,
    DatasetReader,
    DatasetWriter,
    EpisodeRef,
    ShardCheck,
    Stored,
    Trajectory,
    register_format,
)
from vlagym.dataio.staging import atomic_file, shard_name

SUFFIX = ".hdf5"
SHARD_GLOB = f"shard_*{SUFFIX}"
REQUIRED = ("actions", "rewards", "dones")
FORMAT_VERSION = 2  # 1: no checksums; 2: per-demo CRC-32 of every dataset (attribute "checksums")
# What h5py raises on a damaged file: OSError for a bad chunk or header, RuntimeError for some
# corrupt B-trees and object headers, KeyError/ValueError/TypeError for missing or garbled metadata.
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


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


def _open(path: Path) -> h5py.File:
    return h5py.File(path, "r")


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
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs["format_version"] = FORMAT_VERSION
        data.attrs["total"] = len(traj.actions)
        _write_demo(data.create_group("demo_0"), traj, attrs, compression)


def merge_into_shard(shard: Path, episode_files: list[Path], env_args: dict[str, Any]) -> None:
    """Copy staged one-demo files into a new shard (atomically), then delete them.

    A kill between the two leaves staged files whose seeds the shard already holds;
    ``DatasetWriter.repair`` removes them before a resumed collection counts or merges anything.
    """
    total = 0
    with atomic_file(shard) as tmp:
        with h5py.File(tmp, "w") as out:
            data = out.create_group("data")
            data.attrs["env_args"] = json.dumps(env_args)
            data.attrs["format_version"] = FORMAT_VERSION
            for i, ep in enumerate(episode_files):
                with reading(ep, "demo_0"), h5py.File(ep, "r") as src:
                    src.copy(src["data/demo_0"], data, name=f"demo_{i}")
                    total += int(src["data/demo_0"].attrs["num_samples"])
            data.attrs["total"] = total
    for ep in episode_files:
        ep.unlink()


class RobomimicWriter(DatasetWriter):
    """Stages ``staging/ep_<seed>.hdf5`` (one-demo files in the shard layout) and merges them into shards.

    ``compression``: HDF5 compression of images (gzip, lzf or None).
    """

    suffix = SUFFIX

    def __init__(self, root: str | os.PathLike, compression: str | None = "gzip") -> None:
        super().__init__(root, compression)

    def stage(self, seed: int, traj: Trajectory, attrs: dict[str, Any], env_args: dict[str, Any]) -> Path:
        self.staging.dir.mkdir(parents=True, exist_ok=True)
        path = self.staging.path(seed)
        write_episode_file(path, traj, attrs, env_args, self.compression)
        return path

    def shards(self) -> list[Path]:
        return sorted(self.root.glob(SHARD_GLOB))

    def commit(self, env_args: dict[str, Any], shard_size: int) -> list[Path]:
        staged = self.staging.paths()
        index = len(self.shards())
        written = []
        for start in range(0, len(staged), shard_size):
            written.append(self.root / shard_name(index, SUFFIX))
            merge_into_shard(written[-1], staged[start:start + shard_size], env_args)
            index += 1
        return written

    def stored(self) -> Iterator[Stored]:
        for path in [*self.shards(), *self.staging.paths()]:
            env_args = file_env_args(path)
            with reading(path), h5py.File(path, "r") as f:
                episodes = [dict(d.attrs) for d in f["data"].values()]
            yield Stored(path, env_args, episodes)

    def format_version(self) -> int:
        versions = []
        for path in self.shards():
            with reading(path), h5py.File(path, "r") as f:
                versions.append(int(f["data"].attrs.get("format_version", 1)))
        return min(versions, default=FORMAT_VERSION)


# --- reading ------------------------------------------------------------------------------------------------
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


def file_env_args(path: Path) -> dict[str, Any]:
    """The ``env_args`` one shard (or staged episode) records."""
    with reading(path, key="data.attrs['env_args']"), h5py.File(path, "r") as f:
        text = f["data"].attrs["env_args"]
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: data.attrs['env_args'] is not valid JSON ({e})") from e


def label_datasets(demo: h5py.Group) -> dict[str, h5py.Dataset]:
    """A demo's privileged labels (``vlagym.envs.labels``) by flat key, e.g. ``object/rgb/uv``; {} when it
    has none (datasets collected before labels existed)."""
    if "labels" not in demo:
        return {}
    out: dict[str, h5py.Dataset] = {}
    demo["labels"].visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset)
                              else None)
    return out


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


def _demo_keys(demo: h5py.Group) -> list[str]:
    return ([f"obs/{k}" for k in demo["obs"]] + [k for k in ARRAYS if k in demo]
            + [f"labels/{k}" for k in label_datasets(demo)])


def _rows(rows: slice) -> str:
    return f"frames {rows.start}..{rows.stop - 1}"


@register_format("robomimic_hdf5", writer=RobomimicWriter)
class RobomimicReader(DatasetReader):
    """Reads a folder of ``shard_*.hdf5`` files, or one shard file."""

    layout = f"{SHARD_GLOB} files in robomimic's layout (data/demo_<i>/obs/<key>, actions, ...), or one such file"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self._env_args: dict[Path, dict[str, Any]] = {}

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.suffix == SUFFIX if path.is_file() else any(path.glob(SHARD_GLOB))

    def files(self) -> list[Path]:
        return shard_paths(self.path)

    def index(self, validate: bool = True) -> list[EpisodeRef]:
        refs = []
        for path in self.files():
            with reading(path), h5py.File(path, "r") as f:
                if "data" not in f:
                    raise DatasetError(f"{path}: no 'data' group (not a robomimic-layout file)")
                for key in sorted(f["data"].keys(), key=_demo_number):
                    with reading(path, key):
                        demo = f["data"][key]
                        if validate:
                            _check_demo(path, key, demo)
                        refs.append(EpisodeRef(path, key, int(demo.attrs["num_samples"]), int(demo.attrs["seed"]),
                                               str(demo.attrs["instruction"]), bool(demo.attrs.get("success", True)),
                                               str(demo.attrs.get("source", "expert")), reader=self))
        return refs

    def keys(self, ref: EpisodeRef) -> list[str]:
        with reading(ref.path, ref.key), self.opened(ref.path, _open) as f:
            return _demo_keys(f["data"][ref.key])

    def read(self, ref: EpisodeRef, key: str, rows: slice | None = None) -> np.ndarray:
        with reading(ref.path, ref.key, key if rows is None else f"{key} {_rows(rows)}"), \
                self.opened(ref.path, _open) as f:
            demo = f["data"][ref.key]
            if key in demo:
                return demo[key][()] if rows is None else demo[key][rows]
            have = _demo_keys(demo)
        raise KeyError(f"{ref.path} [{ref.key}] has no {key!r}; it has {have}")

    def read_keys(self, ref: EpisodeRef, keys: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
        with reading(ref.path, ref.key), self.opened(ref.path, _open) as f:  # one open for every key
            demo = f["data"][ref.key]
            missing = [k for k in keys if k not in demo]
            if not missing:
                out = {}
                for k in keys:
                    with reading(ref.path, ref.key, k):
                        out[k] = demo[k][()]
                return out
            have = _demo_keys(demo)
        raise KeyError(f"{ref.path} [{ref.key}] has no {missing[0]!r}; it has {have}")

    def attrs(self, ref: EpisodeRef) -> dict[str, Any]:
        with reading(ref.path, ref.key), self.opened(ref.path, _open) as f:
            return dict(f["data"][ref.key].attrs)

    def env_args(self, ref: EpisodeRef | None = None) -> dict[str, Any]:
        path = self.files()[0] if ref is None else ref.path
        if path not in self._env_args:
            self._env_args[path] = file_env_args(path)
        return self._env_args[path]

    def verify(self) -> list[ShardCheck]:
        """Decode every chunk of every dataset in every shard and compare the stored checksums.

        Never raises for a damaged shard: each problem is a line naming file, demo, key and (for a
        chunk that does not decode) the frame.
        """
        checks = []
        for path in self.files():
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
