"""The ``lerobot`` dataset format: LeRobot's v3.0 layout, written with pyarrow and PyAV.

A dataset is a folder (LeRobot's ``codebase_version`` "v3.0")::

    meta/info.json                                  fps, features (dtype, shape, names; video info), totals,
                                                    path templates; vlagym's env_args and manifest under "vlagym"
    meta/stats.json                                 per feature min, max, mean, std, count (images: per channel,
                                                    in [0, 1]), aggregated from the episodes' own
    meta/tasks.parquet                              one row per instruction: task (the pandas index), task_index
    meta/episodes/chunk-000/file-000.parquet        one row per episode: episode_index, tasks, length, where its
                                                    rows and video frames are, stats/<feature>/<stat>, and
                                                    vlagym.attrs (seed, success, noise, source as JSON)
    data/chunk-000/file-000.parquet                 one row per frame: every non-video feature, timestamp
                                                    (frame_index / fps), frame_index, episode_index, index,
                                                    task_index
    videos/observation.images.rgb/chunk-000/file-000.mp4
                                                    one video per camera per data file: its episodes one after
                                                    another (AV1 by default, yuv420p), from_timestamp and
                                                    to_timestamp in the episode rows
    staging/ep_<seed>.npz                           episodes written but not yet committed (resume state)

vlagym's flat keys map onto LeRobot's feature names in one table (``FEATURES``; other ``obs/<key>`` become
``observation.images.<key>`` for images, ``observation.<key>`` otherwise, ``labels/a/b`` becomes
``labels.a.b``). A commit turns the staged episodes of each group into one data file, one video per camera and
one episodes file (each written atomically; tasks.parquet and info.json are rewritten before the episodes file,
which comes last, since the index reads it), and only then deletes the group's staged files. Numbers are stored
exactly; frames go through the video codec, so they come back within its tolerance (``docs/RESULTS.md``
measures it).
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlagym.core.io import DatasetError, atomic_write_text, read_json
from vlagym.dataio.format import DatasetReader, DatasetWriter, EpisodeRef, Stored, Trajectory, register_format
from vlagym.dataio.staging import atomic_file

NAME = "lerobot"
CODEBASE_VERSION = "v3.0"
FORMAT_VERSION = 3  # the manifest's format_version: LeRobot's v3.0
FPS = 10  # the simulation's control rate (envs step at 10 Hz)
CHUNKS_SIZE = 1000  # files per chunk folder, LeRobot's default
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
INFO, STATS, TASKS = "meta/info.json", "meta/stats.json", "meta/tasks.parquet"
DEFAULT_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
"""The columns every LeRobot data file has besides the dataset's own features."""
ATTRS = "vlagym.attrs"
"""The episodes-file column with each episode's vlagym attributes (JSON)."""

FEATURES = {"actions": "action", "obs/proprio": "observation.state", "obs/state": "observation.environment_state",
            "rewards": "next.reward", "dones": "next.done", "expert_actions": "expert_action"}
"""vlagym's flat keys -> LeRobot feature names, where LeRobot has a conventional one."""
KEYS = {v: k for k, v in FEATURES.items()}

# Video encoding: LeRobot's default codec (AV1 through SVT-AV1), a short GOP for seeking, near-lossless quality.
CODECS = {"av1": "libsvtav1", "libsvtav1": "libsvtav1", "h264": "libx264", "libx264": "libx264"}
DEFAULT_CODEC = "libsvtav1"
CRF = 20
GOP = 2
DECODED_CACHE = 16  # decoded episodes kept per reader (training reads a few frames at a time)
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def feature_name(key: str, image: bool) -> str:
    """The LeRobot feature that stores the flat key ``key``."""
    if key in FEATURES:
        return FEATURES[key]
    group, _, rest = key.partition("/")
    if "." in rest:
        raise DatasetError(f"cannot name {key!r} as a LeRobot feature: its parts may not contain dots")
    if group == "obs":
        return f"observation.images.{rest}" if image else f"observation.{rest}"
    if group == "labels":
        return "labels." + rest.replace("/", ".")
    return key


def flat_key(name: str) -> str:
    """The flat key of a LeRobot feature (the inverse of ``feature_name``)."""
    if name in KEYS:
        return KEYS[name]
    for prefix, group in (("observation.images.", "obs/"), ("observation.", "obs/"), ("labels.", "labels/")):
        if name.startswith(prefix):
            return group + name[len(prefix):].replace(".", "/")
    return name


def _is_image(arr: np.ndarray) -> bool:
    return arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] == 3


def _dtype_name(arr: np.ndarray) -> str:
    return "bool" if arr.dtype == np.bool_ else str(arr.dtype)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} {value!r} as an episode attribute")


def _column(arr: np.ndarray) -> pa.Array:
    """One feature's rows as a parquet column: a scalar per row, or a fixed-size list of the row's values."""
    if arr.ndim == 1:
        return pa.array(arr)
    flat = arr.reshape(len(arr), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def _numpy(col: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A parquet column back as (rows, *shape) of the feature's dtype."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        values = col.flatten().to_numpy(zero_copy_only=False)
        out = values.reshape(len(col), *shape) if shape != (1,) else values.reshape(len(col), -1)[:, 0]
    else:
        out = col.to_numpy(zero_copy_only=False)
    return np.array(out, dtype=dtype)  # a writable copy (torch refuses read-only arrays)


def episode_stats(arr: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-episode statistics of one feature: min, max, mean, std over frames, and count; images per
    channel in [0, 1], shaped (3, 1, 1)."""
    if _is_image(arr):
        x = arr.reshape(-1, 3).astype(np.float64) / 255.0
        reduce = lambda v: v.reshape(3, 1, 1)  # noqa: E731
    else:
        x = arr.reshape(len(arr), -1).astype(np.float64)
        reduce = lambda v: v  # noqa: E731
    return {"min": reduce(x.min(0)), "max": reduce(x.max(0)), "mean": reduce(x.mean(0)), "std": reduce(x.std(0)),
            "count": np.array([len(arr)])}


def aggregate_stats(per_episode: list[dict[str, np.ndarray]]) -> dict[str, list]:
    """Pool per-episode statistics (count-weighted mean, pooled variance), as LeRobot's aggregate does."""
    counts = np.array([float(s["count"][0]) for s in per_episode])
    w = counts.reshape(-1, *([1] * (np.asarray(per_episode[0]["mean"]).ndim)))
    means = np.stack([np.asarray(s["mean"], np.float64) for s in per_episode])
    stds = np.stack([np.asarray(s["std"], np.float64) for s in per_episode])
    mean = (means * w).sum(0) / counts.sum()
    var = ((stds ** 2 + (means - mean) ** 2) * w).sum(0) / counts.sum()
    return {"min": np.min(np.stack([np.asarray(s["min"]) for s in per_episode]), 0).tolist(),
            "max": np.max(np.stack([np.asarray(s["max"]) for s in per_episode]), 0).tolist(),
            "mean": mean.tolist(), "std": np.sqrt(var).tolist(), "count": [int(counts.sum())]}


# --- video --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _keep_scheduling():
    """Give the calling thread back its scheduling policy: SVT-AV1, run as root, moves it to SCHED_FIFO 99,
    and everything the process starts afterwards (torch's threads, a browser) would inherit real-time priority."""
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy:
            os.sched_setscheduler(0, policy, param)


def encode_video(path: Path, frames: np.ndarray, fps: int, codec: str) -> dict[str, Any]:
    """Write (N, H, W, 3) uint8 frames as one MP4, atomically; frame i at pts i in time base 1/fps. Returns
    the ``video.*`` info LeRobot keeps per video feature."""
    import av

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise
    n, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise DatasetError(f"{path}: yuv420p video needs even frame sizes, got {w}x{h}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, _keep_scheduling():
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = out.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.codec_context.gop_size = GOP
            stream.options = {"crf": str(CRF), **({"preset": "8"} if codec == "libsvtav1" else {})}
            for i, frame in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                vf.pts = i
                out.mux(stream.encode(vf))
            out.mux(stream.encode())
    with av.open(str(path)) as probe:
        s = probe.streams.video[0]
        return {"video.height": s.height, "video.width": s.width, "video.codec": s.codec_context.codec.name
                if s.codec_context.codec.name != "libdav1d" else "av1", "video.pix_fmt": s.pix_fmt,
                "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}


def decode_video(path: Path, start_s: float, count: int, fps: int) -> np.ndarray:
    """``count`` frames of a video from the one at ``start_s`` seconds, as (count, H, W, 3) uint8."""
    import av

    first = round(start_s * fps)
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as f:
            stream = f.streams.video[0]
            tb = stream.time_base
            f.seek(int(start_s / tb), stream=stream, backward=True, any_frame=False)
            for frame in f.decode(stream):
                index = round(float(frame.pts * tb) * fps)
                if index < first:
                    continue
                out.append(frame.to_ndarray(format="rgb24"))
                if len(out) == count:
                    break
    except (av.error.FFmpegError, OSError) as e:
        raise DatasetError(f"{path}: cannot decode frames from {start_s:.3f} s ({type(e).__name__}: {e})") from e
    if len(out) != count:
        raise DatasetError(f"{path}: expected {count} frames from {start_s:.3f} s, decoded {len(out)}; the video is "
                           f"truncated")
    return np.stack(out)


# --- writing ------------------------------------------------------------------------------------------------
def _load_staged(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k not in ("attrs", "env_args")}
            return arrays, json.loads(str(z["attrs"][()])), json.loads(str(z["env_args"][()]))
    except (*NPZ_ERRORS, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the staged episode ({type(e).__name__}: {e})") from e


def _write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as LeRobot writes it from pandas: the task string is the index, task_index a column."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {"index_columns": ["task"], "column_indexes": [],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


class LeRobotWriter(DatasetWriter):
    """Stages ``staging/ep_<seed>.npz`` (every array, the attributes and env_args) and commits each group of
    ``shard_size`` episodes as one data file, one video per camera and one episodes file.

    ``compression``: the video codec (``av1``/``libsvtav1``, the default, or ``h264``/``libx264``); the HDF5 names
    (gzip, lzf) and None choose the default.
    """

    suffix = ".npz"

    def __init__(self, root: str | os.PathLike, compression: str | None = None) -> None:
        super().__init__(root, compression)
        if compression in (None, "gzip", "lzf"):
            self.codec = DEFAULT_CODEC
        elif compression in CODECS:
            self.codec = CODECS[compression]
        else:
            raise ValueError(f"unknown video codec {compression!r} for the lerobot format; use one of "
                             f"{sorted(CODECS)}")

    def stage(self, seed: int, traj: Trajectory, attrs: dict[str, Any], env_args: dict[str, Any]) -> Path:
        self.staging.dir.mkdir(parents=True, exist_ok=True)
        members = {**traj.arrays(),
                   "attrs": np.array(json.dumps({**attrs, "num_samples": len(traj.actions)}, default=_plain)),
                   "env_args": np.array(json.dumps(env_args))}
        path = self.staging.path(seed)
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **members)  # images are compressed once, by the video codec at commit
        return path

    def shards(self) -> list[Path]:
        """The data files an episodes file indexes (one a killed commit left without its episodes file is not
        committed: the next commit writes over it)."""
        episodes = self.root / "meta" / "episodes"
        return [self.root / "data" / p.relative_to(episodes) for p in self._episode_files()]

    def _episode_files(self) -> list[Path]:
        return sorted(self.root.glob("meta/episodes/chunk-*/file-*.parquet"))

    def commit(self, env_args: dict[str, Any], shard_size: int) -> list[Path]:
        staged = self.staging.paths()
        if not staged:
            return []
        info = read_json(self.root / INFO) if (self.root / INFO).exists() else None
        tasks = _read_tasks(self.root) if (self.root / TASKS).exists() else []
        done = [pq.read_table(p, columns=["length"]) for p in self._episode_files()]
        episode = sum(len(t) for t in done)
        frame = sum(int(np.sum(t.column("length").to_numpy())) for t in done)
        file_number = len(self._episode_files())
        features = dict(info["features"]) if info else {}
        written = []
        for start in range(0, len(staged), shard_size):
            group = staged[start:start + shard_size]
            data, episodes_file, rows = self._commit_group(group, file_number, episode, frame, tasks, features)
            written.append(data)
            frame += int(pq.read_metadata(data).num_rows)
            episode += len(group)
            file_number += 1
            # Tasks and info before the episodes file: the index reads the episodes files, and needs both.
            _write_parquet(self.root / TASKS, tasks_table(tasks))
            self._write_info(features, env_args, episode, frame, len(tasks), info)
            _write_parquet(episodes_file, rows)
            for path in group:  # only once the episodes file that indexes them is in place
                path.unlink()
        return written

    def _commit_group(self, group: list[Path], number: int, first_episode: int, first_frame: int,
                      tasks: list[str], features: dict[str, Any]) -> tuple[Path, Path, pa.Table]:
        """Write one group's videos and data file; return the data file, and the episodes file with its rows
        (written by the caller, last)."""
        chunk = {"chunk_index": number // CHUNKS_SIZE, "file_index": number % CHUNKS_SIZE}
        columns: dict[str, list[np.ndarray]] = {}
        frames: dict[str, list[np.ndarray]] = {}
        rows: dict[str, list] = {k: [] for k in ("episode_index", "tasks", "length", "data/chunk_index",
                                                  "data/file_index", "dataset_from_index", "dataset_to_index",
                                                  "meta/episodes/chunk_index", "meta/episodes/file_index", ATTRS)}
        stats: list[dict[str, dict[str, np.ndarray]]] = []
        offset = first_frame
        for i, path in enumerate(group):
            arrays, attrs, _ = _load_staged(path)
            n = int(attrs["num_samples"])
            index = first_episode + i
            instruction = str(attrs["instruction"])
            if instruction not in tasks:
                tasks.append(instruction)
            ep_stats = {}
            for key, arr in arrays.items():
                if len(arr) != n:
                    raise DatasetError(f"{path}: {key} has {len(arr)} rows, num_samples is {n}")
                image = _is_image(arr)
                name = feature_name(key, image)
                self._declare(features, name, arr, image)
                (frames if image else columns).setdefault(name, []).append(arr)
                ep_stats[name] = episode_stats(arr)
            t = np.arange(n)
            defaults = {"timestamp": (t / FPS).astype(np.float32), "frame_index": t,
                        "episode_index": np.full(n, index), "index": offset + t,
                        "task_index": np.full(n, tasks.index(instruction))}
            for name, arr in defaults.items():
                columns.setdefault(name, []).append(arr.astype(np.float32 if name == "timestamp" else np.int64))
                ep_stats[name] = episode_stats(arr)
            stats.append(ep_stats)
            for k, v in (("episode_index", index), ("tasks", [instruction]), ("length", n),
                         ("data/chunk_index", chunk["chunk_index"]), ("data/file_index", chunk["file_index"]),
                         ("dataset_from_index", offset), ("dataset_to_index", offset + n),
                         ("meta/episodes/chunk_index", chunk["chunk_index"]),
                         ("meta/episodes/file_index", chunk["file_index"]),
                         (ATTRS, json.dumps(attrs, sort_keys=True))):
                rows[k].append(v)
            offset += n
        for name in DEFAULT_FEATURES:
            features.setdefault(name, {"dtype": "float32" if name == "timestamp" else "int64", "shape": [1],
                                       "names": None})
        # Videos first, then the data file; the episodes file that makes them part of the dataset comes last.
        lengths = rows["length"]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        for name, parts in frames.items():
            info = encode_video(self.root / VIDEO_PATH.format(video_key=name, **chunk), np.concatenate(parts),
                                FPS, self.codec)
            features[name]["info"] = info
            rows[f"videos/{name}/chunk_index"] = [chunk["chunk_index"]] * len(group)
            rows[f"videos/{name}/file_index"] = [chunk["file_index"]] * len(group)
            rows[f"videos/{name}/from_timestamp"] = [float(s / FPS) for s in starts]
            rows[f"videos/{name}/to_timestamp"] = [float((s + n) / FPS) for s, n in zip(starts, lengths)]
        data = self.root / DATA_PATH.format(**chunk)
        _write_parquet(data, pa.table({name: _column(np.concatenate(parts)) for name, parts in columns.items()}))
        for name in stats[0]:
            for stat in ("min", "max", "mean", "std", "count"):
                rows[f"stats/{name}/{stat}"] = [np.asarray(s[name][stat]).tolist() for s in stats]
        return data, self.root / EPISODES_PATH.format(**chunk), pa.table(rows)

    @staticmethod
    def _declare(features: dict[str, Any], name: str, arr: np.ndarray, image: bool) -> None:
        shape = list(arr.shape[1:]) or [1]
        if image:
            spec = {"dtype": "video", "shape": shape, "names": ["height", "width", "channels"]}
        else:
            names = None if len(shape) > 1 else [f"{name}_{i}" for i in range(shape[0])] if shape != [1] else None
            spec = {"dtype": _dtype_name(arr), "shape": shape, "names": names}
        held = features.get(name)
        if held is None:
            features[name] = spec
        elif held["dtype"] != spec["dtype"] or list(held["shape"]) != shape:
            raise DatasetError(f"{name}: this episode has {spec['dtype']} {shape}, the dataset {held['dtype']} "
                               f"{list(held['shape'])}")

    def _write_info(self, features: dict[str, Any], env_args: dict[str, Any], episodes: int, frames: int,
                    tasks: int, old: dict[str, Any] | None) -> None:
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": env_args.get("env_name"),
                "total_episodes": episodes, "total_frames": frames, "total_tasks": tasks,
                "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
                "fps": FPS, "splits": {"train": f"0:{episodes}"}, "data_path": DATA_PATH,
                "video_path": VIDEO_PATH if any(f["dtype"] == "video" for f in features.values()) else None,
                "features": features,
                "vlagym": {**((old or {}).get("vlagym") or {}), "env_args": env_args}}
        atomic_write_text(self.root / INFO, json.dumps(info, indent=2))

    def stored(self) -> Iterator[Stored]:
        env_args = (read_json(self.root / INFO).get("vlagym") or {}).get("env_args", {}) \
            if (self.root / INFO).exists() else {}
        for path in self._episode_files():
            attrs = pq.read_table(path, columns=[ATTRS]).column(ATTRS).to_pylist()
            yield Stored(path, env_args, [json.loads(a) for a in attrs])
        for path in self.staging.paths():
            _, attrs, staged_env = _load_staged(path)
            yield Stored(path, staged_env, [attrs])

    def format_version(self) -> int:
        return FORMAT_VERSION

    def write_stats(self, stats: dict[str, Any]) -> None:
        """meta/stats.json, pooled from every episode's statistics in meta/episodes (LeRobot's own; the
        vlagym-keyed ``stats`` cover a subset of the same numbers, which ``LeRobotReader.stats`` maps back)."""
        per_feature: dict[str, list[dict[str, np.ndarray]]] = {}
        for path in self._episode_files():
            table = pq.read_table(path)
            names = {c.split("/")[1] for c in table.column_names if c.startswith("stats/")}
            for name in names:
                cols = {s: table.column(f"stats/{name}/{s}").to_pylist() for s in ("min", "max", "mean", "std",
                                                                                    "count")}
                per_feature.setdefault(name, []).extend(
                    {s: np.asarray(cols[s][i]) for s in cols} for i in range(len(table)))
        atomic_write_text(self.root / STATS, json.dumps({k: aggregate_stats(v) for k, v in sorted(
            per_feature.items())}, indent=2))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """The manifest rides in meta/info.json under "vlagym" (LeRobot ignores keys it does not know)."""
        info = read_json(self.root / INFO)
        info["vlagym"] = {**(info.get("vlagym") or {}), "manifest": manifest}
        atomic_write_text(self.root / INFO, json.dumps(info, indent=2))


def _read_tasks(root: Path) -> list[str]:
    table = pq.read_table(root / TASKS)
    order = np.argsort(table.column("task_index").to_numpy())
    return [table.column("task").to_pylist()[i] for i in order]


# --- reading ------------------------------------------------------------------------------------------------
class _Episode:
    """Where one episode's rows and frames are (from its meta/episodes row)."""

    def __init__(self, row: dict[str, Any], file_start: int, root: Path, info: dict[str, Any]) -> None:
        self.index = int(row["episode_index"])
        self.length = int(row["length"])
        self.row = int(row["dataset_from_index"]) - file_start
        chunk = {"chunk_index": int(row["data/chunk_index"]), "file_index": int(row["data/file_index"])}
        self.data = root / info.get("data_path", DATA_PATH).format(**chunk)
        self.videos = {}
        for name, spec in info["features"].items():
            if spec["dtype"] == "video" and f"videos/{name}/chunk_index" in row:
                vchunk = {"chunk_index": int(row[f"videos/{name}/chunk_index"]),
                          "file_index": int(row[f"videos/{name}/file_index"])}
                path = root / (info.get("video_path") or VIDEO_PATH).format(video_key=name, **vchunk)
                self.videos[name] = (path, float(row[f"videos/{name}/from_timestamp"]))
        attrs = json.loads(row[ATTRS]) if row.get(ATTRS) else {}
        tasks = row.get("tasks") or []
        self.attrs = {"seed": self.index, "success": True, "source": "expert", **attrs,
                      "instruction": attrs.get("instruction", tasks[0] if tasks else ""),
                      "num_samples": self.length}


class _DataFile:
    """One data parquet file, its columns decoded on first use (kept while the reader keeps files open)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: dict[str, np.ndarray] = {}

    def column(self, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        if name not in self.columns:
            try:
                self.columns[name] = _numpy(pq.read_table(self.path, columns=[name]).column(name), shape, dtype)
            except (OSError, pa.ArrowException, KeyError) as e:
                raise DatasetError(f"{self.path} {name}: cannot read ({type(e).__name__}: {e})") from e
        return self.columns[name]

    def close(self) -> None:
        self.columns = {}

    def __enter__(self) -> _DataFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@register_format(NAME, writer=LeRobotWriter)
class LeRobotReader(DatasetReader):
    """Reads a LeRobot v3.0 folder (written by vlagym, or by LeRobot: then seeds are episode indices and
    env_args are empty)."""

    layout = "meta/info.json with codebase_version v3.0, meta/episodes/, data/chunk-*/file-*.parquet, videos/"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self._info: dict[str, Any] | None = None
        self._episodes: dict[int, _Episode] | None = None
        self._decoded: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_decoded": OrderedDict()}

    @classmethod
    def detect(cls, path: Path) -> bool:
        info = path / INFO
        if not info.is_file():
            return False
        try:
            return str(json.loads(info.read_text()).get("codebase_version", "")).startswith("v3.")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return False

    @property
    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = read_json(self.path / INFO)
        return self._info

    def _index(self) -> dict[int, _Episode]:
        if self._episodes is None:
            rows = []
            for path in sorted(self.path.glob("meta/episodes/chunk-*/file-*.parquet")):
                try:
                    table = pq.read_table(path)
                except (OSError, pa.ArrowException) as e:
                    raise DatasetError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
                rows += [r for r in table.select([c for c in table.column_names
                                                  if not c.startswith("stats/")]).to_pylist()]
            starts: dict[tuple[int, int], int] = {}
            for r in rows:
                where = (int(r["data/chunk_index"]), int(r["data/file_index"]))
                starts[where] = min(starts.get(where, r["dataset_from_index"]), int(r["dataset_from_index"]))
            self._episodes = {int(r["episode_index"]): _Episode(
                r, starts[(int(r["data/chunk_index"]), int(r["data/file_index"]))], self.path, self.info)
                for r in rows}
        return self._episodes

    def _episode(self, ref: EpisodeRef) -> _Episode:
        return self._index()[int(ref.key.split("_")[-1])]

    def files(self) -> list[Path]:
        return sorted({*self.path.glob("data/chunk-*/file-*.parquet"), *self.path.glob("videos/*/chunk-*/*.mp4")})

    def index(self, validate: bool = True) -> list[EpisodeRef]:
        refs = []
        for ep in sorted(self._index().values(), key=lambda e: e.index):
            if validate:
                if not ep.data.is_file():
                    raise DatasetError(f"{ep.data} [episode_{ep.index}]: the data file is missing")
                for name, (video, _) in ep.videos.items():
                    if not video.is_file():
                        raise DatasetError(f"{video} [episode_{ep.index}]: the {name} video is missing")
                rows = pq.read_metadata(ep.data).num_rows
                if ep.row + ep.length > rows:
                    raise DatasetError(f"{ep.data} [episode_{ep.index}]: rows {ep.row}..{ep.row + ep.length - 1} "
                                       f"are past the file's {rows} rows")
            a = ep.attrs
            refs.append(EpisodeRef(ep.data, f"episode_{ep.index}", ep.length, int(a["seed"]), str(a["instruction"]),
                                   bool(a["success"]), str(a["source"]), reader=self))
        return refs

    def verify(self) -> list:
        """Decode every array of every episode (frames through the codec), one check per data file."""
        return [c for c in super().verify() if c.demos or c.problems]

    def _names(self) -> dict[str, str]:
        """flat key -> feature name, for the dataset's own features."""
        return {flat_key(name): name for name in self.info["features"] if name not in DEFAULT_FEATURES}

    def keys(self, ref: EpisodeRef) -> list[str]:
        ep = self._episode(ref)
        return [k for k, name in self._names().items()
                if self.info["features"][name]["dtype"] != "video" or name in ep.videos]

    def read(self, ref: EpisodeRef, key: str, rows: slice | None = None) -> np.ndarray:
        name = self._names().get(key)
        if name is None or key not in self.keys(ref):
            raise KeyError(f"{ref.path} [{ref.key}] has no {key!r}; it has {self.keys(ref)}")
        ep = self._episode(ref)
        spec = self.info["features"][name]
        if spec["dtype"] == "video":
            arr = self._frames(ep, name)
        else:
            with self.opened(ep.data, _DataFile) as f:
                arr = f.column(name, tuple(spec["shape"]), spec["dtype"])[ep.row:ep.row + ep.length]
        return arr if rows is None else arr[rows]

    def _frames(self, ep: _Episode, name: str) -> np.ndarray:
        cached = self._decoded.get((ep.index, name))
        if cached is None:
            path, start = ep.videos[name]
            cached = decode_video(path, start, ep.length, int(self.info["fps"]))
            self._decoded[(ep.index, name)] = cached
            while len(self._decoded) > DECODED_CACHE:
                self._decoded.popitem(last=False)
        else:
            self._decoded.move_to_end((ep.index, name))
        return cached

    def attrs(self, ref: EpisodeRef) -> dict[str, Any]:
        return dict(self._episode(ref).attrs)

    def env_args(self, ref: EpisodeRef | None = None) -> dict[str, Any]:
        return dict((self.info.get("vlagym") or {}).get("env_args") or {})

    def metadata(self) -> dict[str, Any]:
        """vlagym's manifest where vlagym wrote the dataset; otherwise what info.json says."""
        manifest = (self.info.get("vlagym") or {}).get("manifest")
        if manifest is not None:
            return manifest
        return {"format": NAME, "format_version": FORMAT_VERSION, "env_args": self.env_args() or
                {"env_name": self.info.get("robot_type") or "unknown"}, "split": "train", "noise": 0.0,
                "episodes": self.info["total_episodes"], "frames": self.info["total_frames"], "dropped_failures": 0}

    def stats(self) -> dict[str, Any] | None:
        """meta/stats.json under vlagym's keys (``actions``, ``expert_actions``, ``proprio``) for the checks of
        ``DemoWindows``, plus every feature under its LeRobot name."""
        path = self.path / STATS
        if not path.exists():
            return None
        stats = read_json(path)
        out = dict(stats)
        for key in ("actions", "expert_actions", "obs/proprio"):
            if FEATURES[key] in stats:
                out[key.removeprefix("obs/")] = {k: v for k, v in stats[FEATURES[key]].items() if k != "count"}
        return out
