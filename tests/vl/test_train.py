"""A tiny pre-training run improves retrieval; its model feeds grounding, `ground` and the CLIP policy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vlagym.vl.data import VLDataConfig, load_vl_data, make_vl_data
from vlagym.vl.grounding import Grounder, GroundingConfig, make_queries, patch_targets, train_grounding
from vlagym.vl.model import VLModel
from vlagym.vl.train import VLTrainConfig, parse_overrides, sample_batch, train_vl

MICRO = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vl") / "data"
    make_vl_data(VLDataConfig(env=["vlagym/TabletopPlace-v0"], images=24, out=str(out), image_size=32,
                              cameras=("rgb",)))
    return out


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("vl") / "run"
    cfg = VLTrainConfig(data=str(data_dir), eval_data=str(data_dir), out=str(out), model_cfg=MICRO, steps=60,
                        batch_size=16, lr=2e-3, warmup=5, eval_every=60, checkpoint_every=30)
    return out, train_vl(cfg)


def test_tiny_pretraining_improves_recall_at_1(run):
    out, m = run
    assert m["final"]["i2t_R@1"] > m["zero_shot"]["i2t_R@1"]
    assert m["final"]["t2i_MRR"] > m["zero_shot"]["t2i_MRR"]
    assert m["history"][-1]["loss"] < m["history"][0]["loss"]
    assert (out / "model" / "open_clip_model.safetensors").exists()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["final"] == m["final"] and 0.0 <= saved["final"]["binding_acc"] <= 1.0


def test_resume_is_a_no_op_when_finished_and_refuses_other_settings(run, data_dir):
    out, m = run
    again = train_vl(VLTrainConfig(data=str(data_dir), eval_data=str(data_dir), out=str(out), model_cfg=MICRO,
                                   steps=60, batch_size=16, lr=2e-3, warmup=5, eval_every=60, checkpoint_every=30))
    assert again["final"] == m["final"]
    with pytest.raises(ValueError, match="different settings"):
        train_vl(VLTrainConfig(data=str(data_dir), out=str(out), model_cfg=MICRO, steps=61))


def test_batches_are_functions_of_seed_and_step(data_dir):
    d = load_vl_data(data_dir)
    a, b = sample_batch(d, 7, 0, 8, True), sample_batch(d, 7, 0, 8, True)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert sample_batch(d, 8, 0, 8, True)[1] != a[1]


def test_overrides_nest_and_reject_unknown_keys():
    o = parse_overrides(["steps=5", "model_cfg.vision_cfg.width=96", "hard_negatives=false"])
    assert o["steps"] == 5 and o["hard_negatives"] is False
    assert o["model_cfg"]["vision_cfg"]["width"] == 96 and o["model_cfg"]["text_cfg"]["layers"] == 3
    with pytest.raises(ValueError, match="unknown vl-train setting 'stepz'"):
        parse_overrides(["stepz=5"])


def test_grounding_head_and_ground_cli(run, data_dir, tmp_path):
    out, _ = run
    res = train_grounding(out / "model", str(data_dir), str(data_dir), out / "grounding",
                          GroundingConfig(steps=40, batch_size=32))
    ev = res["eval"]
    assert ev["present"] > 0 and ev["queries"] > ev["present"]  # absent queries are asked too
    for key in ("pointing_similarity_map", "pointing_head"):
        assert 0.0 <= ev[key] <= 1.0
    assert set(ev["detection@0.5"]) == {"precision", "recall", "f1"}
    d = load_vl_data(data_dir)
    targets = patch_targets(d, make_queries(d, 0), (4, 4))
    assert targets.sum() > 0
    image = tmp_path / "scene.png"
    Image.fromarray(d.images[0]).save(image)
    g = Grounder(out)
    located = g.locate(d.images[0], "the red cube")
    assert located["heat"].shape == (4, 4) and len(located["box"]) == 4
    cli = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "ground", "--model", str(out), "--image",
                          str(image), "--query", "the blue bowl", "--out", str(tmp_path / "g.png")],
                         capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert Image.open(tmp_path / "g.png").size == (128, 128)
    bad = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "ground", "--model", str(out), "--image",
                          str(tmp_path / "missing.png"), "--query", "x"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no image" in bad.stderr


def test_clip_policy_starts_from_pretrained_towers(run, tmp_path):
    from vlagym.policies import make_policy
    from vlagym.policies.factory import load_policy

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "policies"))
    from policy_helpers import STATS, spaces_for

    out, _ = run
    vl = VLModel.load(out / "model")
    obs, act = spaces_for(64)  # the policy's env renders 64 px; the model was pre-trained at 32
    policy = make_policy("clip", obs, act, stats=STATS, pretrained_vl=str(out), fusion="late", fusion_dim=32)
    got, want = policy.clip.state_dict(), vl.clip.state_dict()
    assert policy.config.clip_model_cfg["vision_cfg"]["width"] == 64
    for key, value in want.items():
        if key == "visual.positional_embedding":  # resized from a 4x4 to an 8x8 grid (+ class token)
            assert got[key].shape == (65, 64) and torch.equal(got[key][0], value[0])
        else:
            assert torch.equal(got[key], value), key
    policy.save_pretrained(tmp_path / "p")
    again = load_policy(tmp_path / "p")
    assert torch.equal(again.clip.visual.positional_embedding, policy.clip.visual.positional_embedding)
    fresh = make_policy("clip", obs, act, stats=STATS, clip_model_cfg=MICRO, fusion="late", fusion_dim=32)
    assert not torch.equal(fresh.clip.text_projection, policy.clip.text_projection)


def test_resume_never_unpickles_checkpoint(data_dir, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    from vlagym.agents.safe_load import PickleRefusedError

    monkeypatch.chdir(tmp_path)  # where the crafted pickle would write its marker
    monkeypatch.delenv("VLAGYM_TRUST_PICKLE", raising=False)
    out = tmp_path / "vl"
    out.mkdir()
    shutil.copy(Path(__file__).parents[1] / "crafted" / "checkpoint.pt", out / "checkpoint.pt")
    with pytest.raises(PickleRefusedError, match=r"checkpoint\.pt.*--trust-pickle"):
        train_vl(VLTrainConfig(data=str(data_dir), out=str(out), model_cfg=MICRO, steps=2, batch_size=4))
    assert not (tmp_path / "vlagym_unpickled_marker").exists()
