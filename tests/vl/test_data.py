"""vl-data: the folder layout, masks and boxes, resume after an interruption, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vlagym.vl.data as vdata
from vlagym.dataio.dataset import DatasetError
from vlagym.vl.data import VLDataConfig, load_vl_data, make_vl_data

ENVS = ["vlagym/TabletopPlace-v0", "vlagym/TabletopTouch-v0"]


def _cfg(out, images=8):
    return VLDataConfig(env=ENVS, images=images, out=str(out), image_size=32, shard_size=3)


def test_layout_masks_boxes_and_referring(tmp_path):
    m = make_vl_data(_cfg(tmp_path / "d"))
    assert m["images"] == 8 and len(m["shards"]) == 3
    d = load_vl_data(tmp_path / "d")
    assert d.images.shape == (8, 32, 32, 3) and d.images.dtype == np.uint8
    assert d.masks.shape == (8, 32, 32)
    for i in range(len(d)):
        meta = d.meta[i]
        assert meta["camera"] in ("rgb", "rgb_wrist") and meta["captions"]
        assert len(meta["captions"]) == len(meta["facts"])
        for o in d.objects(i):
            ys, xs = np.nonzero(d.masks[i] == o.index)
            assert o.pixels == len(xs)
            if o.pixels:  # the box is the mask's bounding box
                assert o.box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            if o.visible:
                assert str(o.index) in meta["referring"]
    assert {m["env"] for m in d.meta} == set(ENVS)


def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch):
    make_vl_data(_cfg(tmp_path / "full"))
    real, calls = vdata.render_scene, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(vdata, "render_scene", flaky)
    with pytest.raises(KeyboardInterrupt):
        make_vl_data(_cfg(tmp_path / "resumed"))
    assert len(list((tmp_path / "resumed" / "staging").glob("scene_*.hdf5"))) == 2
    monkeypatch.setattr(vdata, "render_scene", real)
    make_vl_data(_cfg(tmp_path / "resumed"))
    a, b = load_vl_data(tmp_path / "full"), load_vl_data(tmp_path / "resumed")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert [m["captions"] for m in a.meta] == [m["captions"] for m in b.meta]
    assert not (tmp_path / "resumed" / "staging").exists()


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="tabletop"):
        VLDataConfig(env=["vlagym/NavObjectGoal-v0"], images=2, out=str(tmp_path))
    with pytest.raises(ValueError, match="unknown environment"):
        VLDataConfig(env=["vlagym/Nope-v0"], images=2, out=str(tmp_path))
    with pytest.raises(ValueError, match="cameras"):
        VLDataConfig(env=ENVS, images=2, out=str(tmp_path), cameras=("top",))
    make_vl_data(_cfg(tmp_path / "d", images=2))
    with pytest.raises(ValueError, match="finished with 2 images"):
        make_vl_data(_cfg(tmp_path / "d", images=3))
    with pytest.raises(ValueError, match="different settings"):
        make_vl_data(VLDataConfig(env=ENVS, images=2, out=str(tmp_path / "d"), image_size=48))
    shard = sorted((tmp_path / "d").glob("shard_*.hdf5"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DatasetError, match="shard_00000"):
        load_vl_data(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="no shard"):
        load_vl_data(tmp_path)
    assert json.loads((tmp_path / "d" / "request.json").read_text())["image_size"] == 32
