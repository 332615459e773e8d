"""The ``vlagym`` command line, run the way a user runs it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vlagym.agents.video import read_video
from vlagym.dataio.dataset import read_manifest
from vlagym.envs import ENV_IDS as ALL_IDS
from vlagym.experiments.cli import build_parser

SUBCOMMANDS = ["pipeline", "expert-eval", "record", "bench", "envs", "collect", "dataset", "train", "eval", "rl",
               "rl-plot", "data-efficiency", "vl-data", "vl-train", "vl-ground", "ground", "compress",
               "speed-success"]


def vlagym(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_every_subcommand_has_help():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert set(SUBCOMMANDS) <= set(choices)
    for name in SUBCOMMANDS:
        text = choices[name].format_help()
        assert choices[name].description, name
        assert "--help" in text


def test_pipeline_end_to_end_tiny(tmp_path):
    """collect -> train -> eval -> videos -> report, through the CLI, at toy sizes."""
    out = tmp_path / "run"
    res = vlagym("pipeline", "--quick", "--out", str(out), "--demos", "3", "--train-steps", "4",
                 "--eval-episodes", "2", "--workers", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert str(out / "report.json") in res.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["episodes"] == 3 and report["dataset"]["split"] == "train"
    assert report["training"]["steps"] == 4 and (out / "train" / "bcz_TabletopPickUp-v0" / "best").is_dir()
    # Noisy demonstrations, noiseless labels: the run trained on what the expert planned.
    assert report["config"]["noise"] == 0.1 and read_manifest(out / "data" / "TabletopPickUp-v0")["noise"] == 0.1
    assert "labels: expert_actions" in (out / "train" / "bcz_TabletopPickUp-v0" / "config.yaml").read_text()
    for agent in ("policy", "expert"):
        row = report["agents"][agent]["per_task"]["vlagym/TabletopPickUp-v0"]
        assert row["episodes"] == 2 and row["seeds"] == [2_000_000, 2_000_001]
        assert 0 <= row["success_ci95"][0] <= row["success_rate"] <= row["success_ci95"][1] <= 1
        assert row["agent_ms_per_step"] > 0 and row["mean_steps"] >= 1
    assert report["agents"]["expert"]["per_task"]["vlagym/TabletopPickUp-v0"]["success_rate"] == 1.0
    # Evaluation seeds never overlap training seeds.
    assert report["dataset"]["seed_range"][1] < 2_000_000
    showcase = report["showcase"]["per_task"]
    assert set(showcase) == set(ALL_IDS) and "spl" in showcase["vlagym/NavObjectGoal-v0"]
    md = (out / "report.md").read_text()
    assert "| policy | vlagym/TabletopPickUp-v0 |" in md and "| expert | vlagym/NavMultiStep-v0 |" in md
    frames = read_video(out / "videos" / "policy_TabletopPickUp-v0_seed2000000.mp4")
    assert len(frames) > 1 and frames[0].shape[0] >= 256
    assert frames[0].shape[1] == 2 * frames[0].shape[0]  # the wrist view beside the front view
    nav = read_video(out / "videos" / "expert_NavObjectGoal-v0_showcase.mp4")
    assert nav[0].shape[1] == 2 * nav[0].shape[0]  # the top-down map beside the camera view
    assert (out / "videos" / "expert_all_tasks_grid.mp4").exists()
    # The trained policy records a single rollout too, on the env it was trained on (96 px).
    gif = tmp_path / "policy.gif"
    res = vlagym("record", "--policy", str(out / "train" / "bcz_TabletopPickUp-v0"), "--env",
                 "vlagym/TabletopPickUp-v0", "--out", str(gif))
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(read_video(gif)) > 1


def test_expert_eval_exit_codes(tmp_path):
    ok = vlagym("expert-eval", "--env", "vlagym/TabletopTouch-v0", "--episodes", "3", "--workers", "1",
                "--out", str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "report.json").read_text())["agents"]["expert"]["overall"]["episodes"] == 3
    # An impossible bar fails, as CI would want.
    bad = vlagym("expert-eval", "--env", "vlagym/TabletopTouch-v0", "--episodes", "1", "--workers", "1",
                 "--min-success", "1.01")
    assert bad.returncode == 1


def test_unknown_env_is_a_clear_error():
    res = vlagym("expert-eval", "--env", "vlagym/Nope-v0", "--episodes", "1")
    assert res.returncode == 2
    assert "unknown environment id 'vlagym/Nope-v0'" in res.stderr


@pytest.mark.parametrize("suffix", ["mp4", "gif"])
def test_record_one_rollout(tmp_path, suffix):
    out = tmp_path / f"touch.{suffix}"
    res = vlagym("record", "--env", "vlagym/TabletopTouch-v0", "--seed", "3", "--image-size", "64",
                 "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "success" in res.stdout
    assert len(read_video(out)) > 1
