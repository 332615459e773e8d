"""vlagym bench env: each (env, size) in its own pinned process, beside the no-robot ceiling, and panda-gym."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from vlagym.experiments import bench
from vlagym.experiments.cli import main

TOUCH = "vlagym/TabletopTouch-v0"


def test_rows_per_env_and_size_each_from_a_pinned_process(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["bench", "env", "--env", TOUCH, "--sizes", "32", "48", "--steps", "6", "--no-panda-gym",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["env"], r["size"]) for r in rows] == [(TOUCH, 32), (TOUCH, 48)]
    cores = sorted(os.sched_getaffinity(0))
    for r in rows:
        assert r["core"] == cores[0]  # one worker: the first core this process may use
        assert r["cpu_steps_per_s"] > 0 and r["cpu_reference_fps"] > 0
        assert r["ratio"] == pytest.approx(r["cpu_steps_per_s"] / r["cpu_reference_fps"])
        assert r["labels_cost"] == pytest.approx(r["cpu_steps_per_s_no_labels"] / r["cpu_steps_per_s"] - 1)
    printed = capsys.readouterr().out
    assert "| vlagym/TabletopTouch-v0 | 48 |" in printed and "PandaPickAndPlace" not in printed
    # Main process untouched: only the measurement processes are pinned.
    assert sorted(os.sched_getaffinity(0)) == cores


def test_reference_hides_the_robot_and_keeps_the_draw_order():
    import gymnasium as gym

    env = gym.make(TOUCH, image_size=32)
    env.reset(seed=0)
    u = env.unwrapped
    bodies = dict(u.sim.bodies)
    bench._reference_fps(u, 2)
    assert u.sim.bodies == bodies and u.sim.client.getNumBodies() == len(bodies)
    _, seg = u.sim.render(u.cameras["rgb"], u.lighting, segmentation=True)
    assert not np.any((seg & 0xFFFFFF) == bodies["robot"])  # hidden
    assert np.any(seg == bodies["table_visual"])
    env.close()


def test_panda_gym_skipped_with_a_message_when_absent(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "panda_gym" else real(name, *a))
    rows = bench.bench_env([TOUCH], sizes=[32], steps=3)
    assert rows[-1]["env"] == bench.PANDA_GYM_ID and "not installed" in rows[-1]["skipped"]
    assert "comparison skipped" in bench.format_env_rows(rows)


@pytest.mark.skipif(importlib.util.find_spec("panda_gym") is None, reason="panda-gym not installed (optional)")
def test_panda_gym_row_in_the_same_run():
    rows = bench.bench_env([TOUCH], sizes=[32, 40], steps=3)
    row = rows[-1]
    assert row["env"] == bench.PANDA_GYM_ID and row["size"] == 40 and row["comparison"].startswith("panda-gym ")
    assert row["cpu_steps_per_s"] > 0
