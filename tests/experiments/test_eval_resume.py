"""Evaluation keeps finished episodes: a killed worker or a killed evaluation loses none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import vlagym.assets
from vlagym.agents.rollout import FAULT_ENV

CHECKPOINT = Path(vlagym.assets.__file__).parent / "checkpoints" / "bcz_pickup_tiny"
EVAL = ["eval", "--policy", str(CHECKPOINT), "--env", "vlagym/TabletopPickUp-v0", "--episodes", "2"]


def vlagym(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def test_killed_worker_still_gives_a_full_report(tmp_path):
    marker = tmp_path / "killed"
    res = vlagym(*EVAL, "--workers", "2", "--out", str(tmp_path / "out"), fault=f"{marker}:2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert marker.exists() and "a worker process died" in res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [report["agents"][a]["overall"]["episodes"] for a in ("policy", "expert")] == [2, 2]


def test_killed_evaluation_resumes_without_rerunning_finished_episodes(tmp_path):
    out, marker = tmp_path / "out", tmp_path / "killed"
    # workers=1 runs episodes in the evaluating process: it dies as it starts its third episode.
    res = vlagym(*EVAL, "--workers", "1", "--out", str(out), fault=f"{marker}:3")
    assert res.returncode == 70 and marker.exists()
    log = out / "episodes.jsonl"
    first = log.read_text().splitlines()
    assert len(first) == 3 and not (out / "report.json").exists()  # settings + the two finished episodes
    res = vlagym(*EVAL, "--workers", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2 of 4 episodes already finished" in res.stdout
    lines = log.read_text().splitlines()
    assert lines[:3] == first and len(lines) == 5  # the two finished episodes kept, not rerun
    keys = [json.loads(line)["key"] for line in lines[1:]]
    assert len(set(keys)) == 4
    report = json.loads((out / "report.json").read_text())
    assert [e["seed"] for e in report["agents"]["policy"]["episodes"]] == [2_000_000, 2_000_001]
    # Another evaluation into the same folder is refused, naming what differs.
    res = vlagym(*EVAL[:-1], "3", "--workers", "1", "--out", str(out))
    assert res.returncode == 2
    assert "holds episodes of an evaluation with other settings (differing: episodes)" in res.stderr


def test_cut_off_last_line_is_dropped_on_resume(tmp_path):
    out = tmp_path / "out"
    assert vlagym(*EVAL, "--workers", "1", "--no-expert", "--out", str(out)).returncode == 0
    log = out / "episodes.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])  # died in the middle of a write
    res = vlagym(*EVAL, "--workers", "1", "--no-expert", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "1 of 2 episodes already finished" in res.stdout
    assert all(json.loads(line) for line in log.read_text().splitlines())
