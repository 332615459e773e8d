"""The LeRobot v3.0 format: ``vlagym dataset export --format lerobot`` writes LeRobot's documented layout, and
export, import (export back to robomimic HDF5) and training windows give the numbers back exactly and the
frames within the video codec's tolerance."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vlagym.dataio import lerobot_v3 as lr
from vlagym.dataio.dataset import index_demos, verify
from vlagym.dataio.format import detect_format, open_dataset
from vlagym.dataio.windows import DemoWindows
from vlagym.experiments.cli import main

# What a frame may lose in the codec at 32 px (AV1, yuv420p, crf 20): chroma is subsampled 2x2, so colour
# edges blur; measured mean |error| is about 4 of 255 (docs/RESULTS.md).
MIN_PSNR_DB = 25.0
MAX_MEAN_ABS = 8.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def exported(touch_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lerobot") / "touch_lerobot"
    assert main(["dataset", "export", "--format", "lerobot", str(touch_data), str(out)]) == 0
    return out


def _compare(refs_a, refs_b) -> list[float]:
    """Every key of every episode: numbers exact (values and dtype), frames within the codec's tolerance."""
    assert [(r.seed, r.instruction, r.length, r.success) for r in refs_a] == \
           [(r.seed, r.instruction, r.length, r.success) for r in refs_b]
    scores = []
    for a, b in zip(refs_a, refs_b, strict=True):
        assert sorted(a.reader.keys(a)) == sorted(b.reader.keys(b))
        for key in a.reader.keys(a):
            x, y = a.reader.read(a, key), b.reader.read(b, key)
            assert x.shape == y.shape and x.dtype == y.dtype, key
            if key.startswith("obs/rgb"):
                scores.append(psnr(x, y))
                assert scores[-1] >= MIN_PSNR_DB and np.abs(x.astype(int) - y).mean() <= MAX_MEAN_ABS, key
                np.testing.assert_array_equal(b.reader.read(b, key, slice(2, 4)), y[2:4])
            else:
                np.testing.assert_array_equal(x, y, err_msg=key)
        for attr in ("seed", "instruction", "noise", "source", "num_samples"):
            assert a.reader.attrs(a)[attr] == b.reader.attrs(b)[attr], attr
    return scores


def test_export_then_import_keeps_numbers_exact_and_frames_close(touch_data, exported, tmp_path, capsys):
    assert detect_format(exported) == "lerobot" and isinstance(open_dataset(exported), lr.LeRobotReader)
    h5 = index_demos(touch_data)
    _compare(h5, index_demos(exported))
    assert open_dataset(exported).env_args() == open_dataset(touch_data).env_args()
    assert all(c.ok for c in verify(exported)) and sum(c.demos for c in verify(exported)) == 3

    back = tmp_path / "back"  # import: LeRobot -> robomimic HDF5, through the same command
    assert main(["dataset", "export", str(exported), str(back), "--format", "robomimic_hdf5"]) == 0
    assert detect_format(back) == "robomimic_hdf5"
    _compare(h5, index_demos(back))
    assert main(["dataset", "info", str(exported)]) == 0
    assert "episodes     3" in capsys.readouterr().out
    assert main(["dataset", "export", str(touch_data), str(exported)]) == 2  # never over an existing dataset
    assert "already holds a lerobot dataset; export into a new folder" in capsys.readouterr().err


def test_encoding_leaves_the_scheduling_policy_as_it_was(tmp_path):
    """SVT-AV1 run as root moves the calling thread to SCHED_FIFO; the encoder gives the thread its policy back."""
    before = os.sched_getscheduler(0)
    lr.encode_video(tmp_path / "v.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=10, codec=lr.DEFAULT_CODEC)
    assert os.sched_getscheduler(0) == before


def test_training_reads_the_export_through_the_dataset_interface(touch_data, exported):
    kw = dict(history=2, horizon=3, label_keys=("object/rgb/uv", "object/pos"))
    a, b = DemoWindows(exported, **kw), DemoWindows(touch_data, **kw)
    assert len(a) == len(b) == 18
    for i in range(len(b)):
        wa, wb = a[i], b[i]
        assert wa.keys() == wb.keys() and wa["instruction"] == wb["instruction"]
        for k, v in wb.items():
            if k == "rgb":
                assert (wa[k].float() - v.float()).abs().mean() <= MAX_MEAN_ABS
            elif isinstance(v, torch.Tensor):
                torch.testing.assert_close(wa[k], v, rtol=0, atol=0, msg=f"window {i} {k}")
    stats, data = a.action_stats(), b.action_stats()  # meta/stats.json, checked against the data
    np.testing.assert_allclose(stats["mean"], data["mean"], atol=1e-6)
    batch = next(iter(torch.utils.data.DataLoader(a, batch_size=4, num_workers=1)))
    assert batch["rgb"].shape == (4, 2, 3, 32, 32)


def test_the_export_follows_lerobots_documented_v3_schema(exported):
    """LeRobot v3.0 (lerobot/datasets/utils.py, dataset_metadata.py): meta/info.json's DatasetInfo fields, the
    path templates, the default columns, the episodes and tasks tables, one video per camera per file."""
    info = json.loads((exported / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    for field, kind in (("total_episodes", int), ("total_frames", int), ("total_tasks", int), ("chunks_size", int),
                        ("data_files_size_in_mb", int), ("video_files_size_in_mb", int), ("splits", dict),
                        ("features", dict)):
        assert isinstance(info[field], kind), field
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["splits"]) == \
           (3, 18, 3, {"train": "0:3"})
    feats = info["features"]
    for name, spec in feats.items():
        assert {"dtype", "shape", "names"} <= spec.keys() and isinstance(spec["shape"], list), name
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert feats[name]["shape"] == [1], name
    assert feats["action"]["dtype"] == "float32" and feats["observation.state"]["dtype"] == "float32"
    video = feats["observation.images.rgb"]
    assert video["dtype"] == "video" and video["shape"] == [32, 32, 3]
    assert video["names"] == ["height", "width", "channels"]
    assert {"video.height": 32, "video.width": 32, "video.codec": "av1", "video.pix_fmt": "yuv420p",
            "video.fps": 10, "has_audio": False}.items() <= video["info"].items()

    data_files = sorted(exported.glob("data/chunk-*/file-*.parquet"))
    assert [p.relative_to(exported).as_posix() for p in data_files] == ["data/chunk-000/file-000.parquet"]
    frames = [pq.read_table(p) for p in data_files]
    table = frames[0].to_pylist()
    assert set(frames[0].column_names) == {n for n, s in feats.items() if s["dtype"] != "video"}
    assert [r["index"] for r in table] == list(range(18))
    assert all(r["timestamp"] == np.float32(r["frame_index"] / info["fps"]) for r in table)

    eps = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    tasks = pq.read_table(exported / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]  # pandas reads task as index
    task_of = dict(zip(tasks.column("task_index").to_pylist(), tasks.column("task").to_pylist()))
    for ep in eps:
        assert ep["dataset_to_index"] - ep["dataset_from_index"] == ep["length"]
        rows = [r for r in table if r["episode_index"] == ep["episode_index"]]
        assert [r["index"] for r in rows] == list(range(ep["dataset_from_index"], ep["dataset_to_index"]))
        assert ep["tasks"] == [task_of[rows[0]["task_index"]]]
        key = "videos/observation.images.rgb"
        path = exported / info["video_path"].format(video_key="observation.images.rgb",
                                                    chunk_index=ep[f"{key}/chunk_index"],
                                                    file_index=ep[f"{key}/file_index"])
        assert path.is_file() and ep[f"{key}/to_timestamp"] - ep[f"{key}/from_timestamp"] == \
               pytest.approx(ep["length"] / info["fps"])
        for stat in ("min", "max", "mean", "std", "count"):
            assert f"stats/action/{stat}" in ep
    assert eps[0]["videos/observation.images.rgb/from_timestamp"] == 0.0
    with av.open(str(exported / "videos/observation.images.rgb/chunk-000/file-000.mp4")) as f:
        assert f.streams.video[0].codec_context.name in ("libdav1d", "av1")
        assert sum(1 for _ in f.decode(video=0)) == sum(ep["length"] for ep in eps)  # one video for the file
    stats = json.loads((exported / "meta/stats.json").read_text())
    assert np.array(stats["observation.images.rgb"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [18]


@pytest.mark.skipif(importlib.util.find_spec("lerobot") is None,
                    reason=f"the lerobot package is not installed here (it needs Python >= 3.12 and an older torch; "
                           f"this is Python {sys.version_info.major}.{sys.version_info.minor})")
def test_lerobot_loads_the_export(exported):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("vlagym/touch", root=exported)
    assert ds.num_episodes == 3 and ds.num_frames == 18
    item = ds[7]
    assert item["observation.images.rgb"].shape == (3, 32, 32)
    ref = index_demos(exported)[1]
    np.testing.assert_array_equal(item["action"].numpy(), ref.reader.read(ref, "actions")[1])


def test_collect_writes_lerobot_directly(touch_data, tmp_path):
    from vlagym.agents.collect import CollectConfig, collect

    out = tmp_path / "collected"
    m = collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=str(out), workers=1,
                              env_kwargs={"image_size": 32}, shard_size=2, format="lerobot"))
    assert m["format"] == "lerobot" and m["format_version"] == 3 and detect_format(out) == "lerobot"
    _compare(index_demos(touch_data), index_demos(out))


def test_a_commit_killed_before_its_deletes_resumes_without_duplicates(make_trajectory, tmp_path, monkeypatch):
    writer = lr.LeRobotWriter(tmp_path / "d")
    trajs = {seed: make_trajectory(seed) for seed in (5, 6, 7)}
    for seed, traj in trajs.items():
        writer.stage(seed, traj, {"seed": seed, "instruction": f"touch {seed}", "success": np.bool_(True)},
                     {"env_name": "x"})
    real_unlink = Path.unlink

    def killed(self, *a, **kw):  # the first group is in place, its staged files are not yet deleted
        if self.parent == writer.staging.dir:
            raise KeyboardInterrupt
        return real_unlink(self, *a, **kw)

    monkeypatch.setattr(Path, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        writer.commit({"env_name": "x"}, shard_size=2)
    monkeypatch.undo()
    (tmp_path / "d" / "data/chunk-000/file-001.parquet").write_bytes(b"half")  # a later group's orphan data file
    assert [p.name for p in writer.shards()] == ["file-000.parquet"]
    assert writer.repair() == [5, 6] and writer.staging.seeds() == [7]
    writer.commit({"env_name": "x"}, shard_size=2)
    refs = open_dataset(tmp_path / "d").episodes()
    assert [(r.seed, r.key, r.instruction) for r in refs] == [(s, f"episode_{i}", f"touch {s}")
                                                             for i, s in enumerate((5, 6, 7))]
    for ref in refs:
        for key, arr in trajs[ref.seed].arrays().items():
            if not key.startswith("obs/rgb"):
                np.testing.assert_array_equal(ref.reader.read(ref, key), arr, err_msg=key)
    info = json.loads((tmp_path / "d/meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 18, 3)
    with pytest.raises(KeyError, match=r"has no 'obs/depth'; it has \['"):
        refs[0].reader.read(refs[0], "obs/depth")
