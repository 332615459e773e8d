"""``vlagym compress``: flags generated from CompressConfig, an ONNX export of the shipped checkpoint run as a
user runs it (a subprocess) that loads back, a distillation through key=value settings, and one-line errors
for the inputs it cannot take."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import vlagym.assets
from vlagym.experiments.cli import build_parser, main
from vlagym.policies import load_policy
from vlagym.policies.compress import read_record
from vlagym.policies.compress.onnx_backend import OnnxPolicy
from vlagym.policies.train import TrainConfig, train

CHECKPOINT = Path(vlagym.assets.__file__).parent / "checkpoints" / "bcz_pickup_tiny"
TINY_BCZ = {"text_encoder": "hash", "text_dim": 16, "hidden_dim": 32, "horizon": 3, "backbone_width": 16,
            "pool": "spatial_softmax", "num_keypoints": 8, "output_stride": 16}


def test_help_shows_the_field_docs():
    text = " ".join(build_parser(only="compress")._subparsers._group_actions[0].choices["compress"]
                    .format_help().split())
    for flag in ("--policy", "--method", "--out", "--calibration-env", "--data", "--student-overrides",
                 "--distill-weight", "--temperature", "--config"):
        assert flag in text
    assert "backbone_width=8 (half a width-16 BC-Z)" in text
    assert "onnx-int8 (needs a calibration set)" in text
    assert "{dynamic-int8,prune-l1,prune-ln,prune-channels,onnx,onnx-int8,distill}" in text


def test_onnx_of_the_shipped_checkpoint_end_to_end(tmp_path):
    out = tmp_path / "onnx"
    res = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "compress", "--policy", str(CHECKPOINT),
                          "--method", "onnx", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"-> {out}" in res.stdout and "parameters: " in res.stdout and "not measured" in res.stdout
    record = read_record(out)
    assert record["method"] == "onnx" and record["teacher"] == str(CHECKPOINT.resolve())
    policy = load_policy(out)
    assert isinstance(policy, OnnxPolicy)
    rng = np.random.default_rng(0)
    obs = {"rgb": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
           "rgb_wrist": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
           "instruction": "pick up the red cube", "proprio": np.zeros(6, np.float32)}
    reference = load_policy(CHECKPOINT)
    np.testing.assert_allclose(policy.act(obs), reference.act(obs), atol=1e-4)
    assert json.loads((out / "env_args.json").read_text())["env_name"] == "vlagym/TabletopPickUp-v0"


def test_distill_through_key_value_settings(touch_data, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    train(TrainConfig(data=[str(touch_data)], policy="bcz", policy_overrides=TINY_BCZ, out=str(teacher), steps=2,
                      batch_size=4, num_workers=0, eval_every=0, warmup_steps=1, threads=1, device="cpu"),
          progress=False)
    out = tmp_path / "student"
    rc = main(["compress", "--policy", str(teacher), "--method", "distill", "--out", str(out), "--data",
               str(touch_data), "--steps", "3", "--batch-size", "4", "student_overrides.backbone_width=8",
               "distill_weight=0.5"])
    assert rc == 0
    shown = capsys.readouterr().out
    assert "parameters: " in shown and "agreement with the teacher: max_abs_diff" in shown
    record = read_record(out)
    assert record["settings"]["student_overrides"] == {"backbone_width": 8}
    assert record["settings"]["distill_weight"] == 0.5 and record["settings"]["steps"] == 3
    assert load_policy(out).config.backbone_width == 8


def _error(capsys, *argv: str) -> str:
    assert main(["compress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlagym compress: error: ") and err.count("\n") == 1, err
    return err


def test_clear_errors(tmp_path, capsys):
    sb3 = tmp_path / "ppo.zip"
    with zipfile.ZipFile(sb3, "w") as z:
        z.writestr("data", "{}")
    assert "stable-baselines3 model; compression works on a vlagym policy folder" in _error(
        capsys, "--policy", str(sb3), "--method", "onnx", "--out", str(tmp_path / "a"))
    rl_run = tmp_path / "rl_run"
    rl_run.mkdir()
    (rl_run / "model.zip").write_bytes(sb3.read_bytes())
    assert "stable-baselines3 model" in _error(capsys, "--policy", str(rl_run), "--method", "distill", "--out",
                                               str(tmp_path / "b"), "--data", str(tmp_path))
    assert "needs a calibration set" in _error(capsys, "--policy", str(CHECKPOINT), "--method", "onnx-int8",
                                               "--out", str(tmp_path / "c"))
    assert "method 'distill' needs data" in _error(capsys, "--policy", str(CHECKPOINT), "--method", "distill",
                                                   "--out", str(tmp_path / "d"))
    assert "method=prune: choose one of" in _error(capsys, "--policy", str(CHECKPOINT), "--out",
                                                   str(tmp_path / "e"), "method=prune")
    with pytest.raises(SystemExit) as e:  # a flag value outside the choices: argparse's own usage error
        main(["compress", "--policy", str(CHECKPOINT), "--method", "quantize", "--out", str(tmp_path / "f")])
    assert e.value.code == 2 and "invalid choice: 'quantize'" in capsys.readouterr().err
