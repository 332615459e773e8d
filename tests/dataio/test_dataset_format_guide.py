"""docs/adding-a-dataset-format.md, followed end to end: its code registers the ``npz_episodes`` format,
collection writes two expert episodes in it (and resumes to a third), and every reader of datasets
(``open_dataset``, ``load_demo``, ``DemoWindows``, ``vlagym dataset info``) gives what the robomimic HDF5
dataset of the same seeds gives."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vlagym.agents.collect import CollectConfig, collect
from vlagym.dataio import format as fmt
from vlagym.dataio.dataset import index_demos, load_demo, read_manifest, verify
from vlagym.dataio.windows import DemoWindows

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "adding-a-dataset-format.md"
MODULE = "npz_episodes_guide"


def guide_code() -> str:
    """Every ```python block of the guide, in order."""
    blocks = re.findall(r"^```python\n(.*?)^```$", GUIDE.read_text(), flags=re.S | re.M)
    assert len(blocks) >= 3, f"{GUIDE} lost its python blocks"
    return "\n\n".join(blocks)


@pytest.fixture(scope="module")
def npz_format(tmp_path_factory):
    """The guide's code as an importable module (collection's workers unpickle its writer), imported once;
    the registry and sys.modules are restored afterwards."""
    folder = tmp_path_factory.mktemp("guide")
    (folder / f"{MODULE}.py").write_text(guide_code())
    saved = dict(fmt._FORMATS)
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(MODULE)
        assert "npz_episodes" in fmt.formats()
        yield module
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(MODULE, None)
        fmt._FORMATS.clear()
        fmt._FORMATS.update(saved)


def _collect(out: Path, episodes: int) -> dict:
    # touch_data's settings (conftest): the same seeds give the same episodes.
    return collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=episodes, out=str(out), workers=1,
                                 env_kwargs={"image_size": 32}, shard_size=2, format="npz_episodes"))


def _assert_same_demos(npz_refs, h5_refs) -> None:
    assert [(r.seed, r.length, r.instruction, r.success, r.source) for r in npz_refs] == \
           [(r.seed, r.length, r.instruction, r.success, r.source) for r in h5_refs]
    for a, b in zip(npz_refs, h5_refs, strict=True):
        assert sorted(a.reader.keys(a)) == sorted(b.reader.keys(b))
        for key in b.reader.keys(b):
            np.testing.assert_array_equal(a.reader.read(a, key), b.reader.read(b, key), err_msg=key)
            np.testing.assert_array_equal(a.reader.read(a, key, slice(2, 5)), b.reader.read(b, key, slice(2, 5)))
        da, db = load_demo(a), load_demo(b)
        assert da["obs"].keys() == db["obs"].keys() and da.get("labels", {}).keys() == db.get("labels", {}).keys()
        assert {k: da["attrs"][k] for k in ("seed", "instruction", "noise", "source", "num_samples")} == \
               {k: db["attrs"][k] for k in ("seed", "instruction", "noise", "source", "num_samples")}


def test_the_guide_format_collects_resumes_reads_and_trains(npz_format, touch_data, tmp_path, capsys, monkeypatch):
    import vlagym.agents.collect as collect_module

    out = tmp_path / "touch_npz"

    def killed(root, cfg):  # every episode staged, none committed: where a kill leaves a collection
        raise KeyboardInterrupt

    monkeypatch.setattr(collect_module, "_merge_staged", killed)
    with pytest.raises(KeyboardInterrupt):
        _collect(out, 3)
    assert len(list((out / "staging").glob("ep_*.npz"))) == 3
    with pytest.raises(FileNotFoundError, match="not a dataset of any registered format"):
        fmt.open_dataset(out)
    monkeypatch.undo()
    manifest = _collect(out, 3)  # resumes: counts the staged episodes, runs nothing, commits
    assert manifest["episodes"] == 3 and manifest["format"] == "npz_episodes"
    assert manifest["seed_range"] == read_manifest(touch_data)["seed_range"]
    assert sorted(p.name for p in out.iterdir()) == [".lock", "episodes", "manifest.json", "meta.json",
                                                    "request.json", "stats.json"]
    assert fmt.detect_format(out) == "npz_episodes" and fmt.detect_format(touch_data) == "robomimic_hdf5"
    reader = fmt.open_dataset(out)
    assert isinstance(reader, npz_format.NpzReader)
    assert reader.env_args() == fmt.open_dataset(touch_data).env_args()
    h5_refs = index_demos(touch_data)
    _assert_same_demos(index_demos(out), h5_refs)
    assert all(c.ok for c in verify(out)) and sum(c.demos for c in verify(out)) == 3

    # Windows (history and horizon cross episode edges; labels too) are the same tensors either way.
    kw = dict(history=2, horizon=3, label_keys=("object/rgb/uv", "object/pos"))
    npz_windows, h5_windows = DemoWindows(out, **kw), DemoWindows(touch_data, **kw)
    assert len(npz_windows) == len(h5_windows) == sum(r.length for r in h5_refs)
    for i in range(len(h5_windows)):
        a, b = npz_windows[i], h5_windows[i]
        assert a.keys() == b.keys() and a["instruction"] == b["instruction"]
        for k, v in b.items():
            if isinstance(v, torch.Tensor):
                torch.testing.assert_close(a[k], v, rtol=0, atol=0, msg=f"window {i} {k}")
    for name in ("action_stats", "proprio_stats"):  # each format's stats.json, checked against its data
        assert getattr(npz_windows, name)() == getattr(h5_windows, name)()
    batch = next(iter(torch.utils.data.DataLoader(npz_windows, batch_size=4, num_workers=1)))
    assert batch["rgb"].shape == (4, 2, 3, 32, 32) and batch["actions"].shape[:2] == (4, 3)

    # A lost request.json: the settings recorded in every episode file still refuse other ones.
    (out / "request.json").unlink()
    with pytest.raises(ValueError, match=r"episodes/ep_\d+\.npz was collected with different settings: noise"):
        collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=str(out), env_kwargs={"image_size": 32},
                              shard_size=2, format="npz_episodes", noise=0.1))

    from vlagym.experiments.cli import main

    assert main(["dataset", "info", str(out)]) == 0
    assert "episodes     3" in capsys.readouterr().out


def test_a_staged_only_folder_is_not_yet_a_dataset(npz_format, make_trajectory, tmp_path):
    root = tmp_path / "d"
    writer = fmt.dataset_writer(root, "npz_episodes", compression=None)
    traj = make_trajectory(5)
    writer.stage(5, traj, {"seed": 5, "instruction": "touch it", "success": np.bool_(True)}, {"env_name": "x"})
    with pytest.raises(FileNotFoundError, match=r"a collection in progress"):
        fmt.open_dataset(root)
    assert [p.name for p in writer.commit({"env_name": "x"}, shard_size=1)] == ["ep_000000005.npz"]
    (ref,) = fmt.open_dataset(root).episodes()
    assert ref.seed == 5 and ref.success is True and ref.length == 6 and not writer.staging.paths()
    assert ref.reader.read_keys(ref, ref.reader.keys(ref)).keys() == traj.arrays().keys()
    with pytest.raises(KeyError, match=r"has no 'obs/depth'; it has \['obs/rgb'"):
        ref.reader.read(ref, "obs/depth")
