"""The format registry's refusals, and robomimic HDF5 written and read back through the interface alone."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from vlagym.agents.collect import CollectConfig
from vlagym.core.io import DatasetError
from vlagym.dataio import format as fmt
from vlagym.dataio.dataset import compute_stats, index_demos, load_demo, verify
from vlagym.dataio.robomimic_hdf5 import RobomimicReader
from vlagym.dataio.staging import atomic_file

ENV_ARGS = {"env_name": "vlagym/TabletopTouch-v0", "type": "vlagym", "env_kwargs": {"image_size": 8}}


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry for a test that registers formats of its own."""
    monkeypatch.setattr(fmt, "_FORMATS", dict(fmt._FORMATS))
    return fmt


def _attrs(seed: int) -> dict:
    return {"instruction": f"touch the cube {seed}", "seed": seed, "success": seed % 2 == 0, "noise": 0.0,
            "source": "expert"}


def test_unknown_format_names_the_registered_ones(tmp_path):
    for call in (lambda: fmt.dataset_writer(tmp_path, "lerobot_v3"), lambda: fmt.open_dataset(tmp_path, "lerobot_v3"),
                 lambda: CollectConfig(env="vlagym/TabletopTouch-v0", episodes=1, out=str(tmp_path),
                                       format="lerobot_v3")):
        with pytest.raises(ValueError, match=r"unknown dataset format 'lerobot_v3'; registered: .*robomimic_hdf5"):
            call()


def test_undetectable_paths_say_what_each_format_looks_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no dataset at .*nowhere"):
        fmt.open_dataset(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(FileNotFoundError, match=r"is not a dataset of any registered format; looked for "
                                                r"lerobot: meta/info.json .*; robomimic_hdf5: shard_\*\.hdf5 files"):
        fmt.open_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"notes.txt is not a robomimic_hdf5 dataset \(expected shard_"):
        fmt.open_dataset(tmp_path / "notes.txt", format="robomimic_hdf5")
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        index_demos(tmp_path / "nowhere")


def test_registration_is_refused_twice_and_detection_must_be_unique(registry, tmp_path):
    with pytest.raises(ValueError, match=r"'robomimic_hdf5' is already registered by "
                                         r"vlagym.dataio.robomimic_hdf5.RobomimicReader"):
        registry.register_format("robomimic_hdf5")(RobomimicReader)

    class NoLayout(RobomimicReader):
        layout = ""

    with pytest.raises(ValueError, match="must say what its datasets look like on disk"):
        registry.register_format("no_layout")(NoLayout)

    class AlsoShards(RobomimicReader):  # a second format that claims the same folders
        layout = "shard files too"

    registry.register_format("also_shards")(AlsoShards)
    (tmp_path / "shard_00000.hdf5").touch()
    with pytest.raises(DatasetError, match=r"several formats \(also_shards, robomimic_hdf5\)"):
        registry.open_dataset(tmp_path)
    assert isinstance(registry.open_dataset(tmp_path, format="robomimic_hdf5"), RobomimicReader)
    with pytest.raises(ValueError, match="'also_shards' can be read but not written here"):
        registry.dataset_writer(tmp_path, "also_shards")


def test_robomimic_round_trips_through_the_interface(make_trajectory, tmp_path):
    root = tmp_path / "d"
    writer = fmt.dataset_writer(root, "robomimic_hdf5", compression="gzip")
    trajs = {seed: make_trajectory(seed, steps=4 + seed) for seed in (3, 1, 2)}
    for seed, traj in trajs.items():
        writer.stage(seed, traj, _attrs(seed), ENV_ARGS)
    assert writer.staging.seeds() == [1, 2, 3] and writer.committed() == []
    assert [p.name for p in writer.commit(ENV_ARGS, shard_size=2)] == ["shard_00000.hdf5", "shard_00001.hdf5"]
    assert writer.staging.paths() == [] and writer.format_version() == 2

    reader = fmt.open_dataset(root)
    assert isinstance(reader, RobomimicReader) and reader.env_args() == ENV_ARGS
    refs = reader.episodes()
    assert [(r.seed, r.length, r.instruction, r.success) for r in refs] == \
           [(s, 4 + s, f"touch the cube {s}", s % 2 == 0) for s in (1, 2, 3)]
    for ref in refs:
        want = trajs[ref.seed].arrays()
        assert sorted(reader.keys(ref)) == sorted(want)
        for key, arr in want.items():
            got = reader.read(ref, key)
            assert got.dtype == arr.dtype
            np.testing.assert_array_equal(got, arr, err_msg=key)
            np.testing.assert_array_equal(reader.read(ref, key, slice(1, 3)), arr[1:3])
        demo = load_demo(ref)
        np.testing.assert_array_equal(demo["labels"]["object/rgb/uv"], want["labels/object/rgb/uv"])
        assert {k: demo["attrs"][k] for k in _attrs(ref.seed)} == _attrs(ref.seed)
        assert reader.env_args(ref) == ENV_ARGS
    with pytest.raises(KeyError, match=r"\[demo_0\] has no 'obs/depth'; it has \['obs/proprio', 'obs/rgb'"):
        reader.read(refs[0], "obs/depth")
    assert all(c.ok and not c.without_checksums for c in verify(root)) and sum(c.demos for c in verify(root)) == 3
    stats = compute_stats(refs)
    all_actions = np.concatenate([trajs[s].actions for s in (1, 2, 3)]).astype(np.float64)
    np.testing.assert_allclose(stats["actions"]["mean"], all_actions.mean(0))

    # What a resume sees: every shard's env_args and each demo's attributes.
    stored = list(writer.stored())
    assert [s.path.name for s in stored] == ["shard_00000.hdf5", "shard_00001.hdf5"]
    assert all(s.env_args == ENV_ARGS for s in stored) and [len(s.episodes) for s in stored] == [2, 1]

    # A commit killed between its shard and its deletes leaves staged copies of committed seeds: repair
    # drops them, and the next commit appends a shard for what is genuinely new.
    writer.stage(2, trajs[2], _attrs(2), ENV_ARGS)
    writer.stage(7, make_trajectory(7), _attrs(7), ENV_ARGS)
    assert writer.repair() == [2] and writer.staging.seeds() == [7]
    writer.commit(ENV_ARGS, shard_size=2)
    assert [r.seed for r in fmt.open_dataset(root).episodes()] == [1, 2, 3, 7]


def test_a_single_shard_file_is_a_dataset_and_keep_open_handles_stay_per_process(make_trajectory, tmp_path):
    writer = fmt.dataset_writer(tmp_path, "robomimic_hdf5")
    writer.stage(0, make_trajectory(0), _attrs(0), ENV_ARGS)
    (shard,) = writer.commit(ENV_ARGS, shard_size=5)
    reader = fmt.open_dataset(shard)
    (ref,) = reader.episodes()
    reader.keep_open = True
    reader.read(ref, "actions")
    assert list(reader._handles) == [shard]
    import pickle

    clone = pickle.loads(pickle.dumps(ref))
    assert clone.reader._handles == {} and clone.reader.read(clone, "obs/rgb").shape == (6, 8, 8, 3)
    reader.close()
    assert reader._handles == {}


def test_atomic_file_leaves_the_target_alone_when_the_write_fails(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text(json.dumps({"episodes": 2}))
    with pytest.raises(RuntimeError, match="disk full"), atomic_file(target) as tmp:
        tmp.write_text('{"epis')
        raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"episodes": 2} and sorted(p.name for p in tmp_path.iterdir()) == \
        ["manifest.json"]


def test_a_corrupt_shard_is_named_by_the_interface(make_trajectory, tmp_path):
    writer = fmt.dataset_writer(tmp_path, "robomimic_hdf5")
    writer.stage(0, make_trajectory(0), _attrs(0), ENV_ARGS)
    (shard,) = writer.commit(ENV_ARGS, shard_size=1)
    with h5py.File(shard, "a") as f:
        del f["data/demo_0/rewards"]
    with pytest.raises(DatasetError, match=r"shard_00000.hdf5 \[demo_0\]: missing dataset 'rewards'"):
        fmt.open_dataset(tmp_path).episodes()
    assert Path(shard).exists()


def test_an_installed_package_declares_its_format_by_entry_point(tmp_path):
    """``import vlagym.dataio`` imports the modules of the "vlagym.dataset_formats" entry-point group, so a
    fresh process (a ``vlagym`` command) knows a third-party format; a broken one warns and is skipped."""
    import subprocess
    import sys

    from vlagym.dataio.format import PLUGIN_GROUP

    (tmp_path / "my_format.py").write_text(
        "from vlagym.dataio.format import register_format\n"
        "from vlagym.dataio.robomimic_hdf5 import RobomimicReader\n\n\n"
        "@register_format('plugged_hdf5')\n"
        "class PluggedReader(RobomimicReader):\n"
        "    layout = 'the robomimic layout, under another name'\n")
    (tmp_path / "broken_format.py").write_text("raise ImportError('no codec')\n")
    info = tmp_path / "my_formats-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-formats\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{PLUGIN_GROUP}]\nplugged = my_format\nbroken = broken_format\n")
    code = "from vlagym.dataio.format import formats\nprint('formats', formats())\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "formats ['lerobot', 'plugged_hdf5', 'robomimic_hdf5']" in out.stdout.splitlines()
    assert "plugin 'broken' (broken_format) failed to import: ImportError: no codec" in out.stderr
