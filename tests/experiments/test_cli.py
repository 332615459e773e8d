"""The ``vlagym`` command line, run the way a user runs it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vlagym.agents.video import read_video
from vlagym.experiments.cli import build_parser

SUBCOMMANDS = ["pipeline", "expert-eval", "record", "bench", "envs"]


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


def test_pipeline_quick_writes_report_and_videos(tmp_path):
    out = tmp_path / "run"
    res = vlagym("pipeline", "--quick", "--out", str(out), "--env", "vlagym/TabletopTouch-v0",
                 "--episodes", "2", "--videos", "1", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert str(out / "report.json") in res.stdout
    report = json.loads((out / "report.json").read_text())
    block = report["agents"]["expert"]
    row = block["per_task"]["vlagym/TabletopTouch-v0"]
    assert row["episodes"] == 2 and 0 <= row["success_ci95"][0] <= row["success_rate"] <= row["success_ci95"][1]
    assert row["seeds"] == [2_000_000, 2_000_001]
    assert report["provenance"]["vlagym_version"]
    assert "| expert | vlagym/TabletopTouch-v0 |" in (out / "report.md").read_text()
    videos = sorted((out / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["TabletopTouch-v0_grid.mp4", "TabletopTouch-v0_seed2000000.mp4"]
    frames = read_video(videos[1])
    assert len(frames) > 1  # decodes, and holds more than the first frame
    assert frames[0].shape[0] >= 256


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
