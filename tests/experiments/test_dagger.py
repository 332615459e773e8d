"""``vlagym dagger``: one round on a tiny policy grows the data by exactly the rolled-out states, labelled by
the expert; a SIGKILL mid-round resumes without loss or duplicates; changed settings are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import h5py
import numpy as np
import pytest
import yaml

from vlagym.dataio.dataset import index_demos
from vlagym.experiments.dagger import DAGGER_SEED_START, DaggerConfig, dagger
from vlagym.policies.train import TrainConfig, train

TINY_BCZ = {"text_encoder": "hash", "text_dim": 16, "hidden_dim": 32, "horizon": 3}


@pytest.fixture(scope="module")
def tiny_run(touch_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dagger") / "bc"
    train(TrainConfig(data=[str(touch_data)], policy="bcz", policy_overrides=TINY_BCZ, out=str(out), steps=6,
                      batch_size=4, num_workers=0, eval_every=0, save_every=6, warmup_steps=1, threads=1,
                      labels="expert_actions"), progress=False)
    return out


def _cfg(run, out, **kw) -> DaggerConfig:
    return DaggerConfig(**{**dict(policy=str(run), out=str(out), rounds=1, episodes=2, steps=3,
                                  eval_episodes=1, threads=1), **kw})


def test_one_round_adds_the_rollouts_with_expert_labels(tiny_run, touch_data, tmp_path):
    report = dagger(_cfg(tiny_run, tmp_path / "d"))
    rollouts = index_demos(tmp_path / "d" / "round_01" / "data")
    assert [r.seed for r in rollouts] == [DAGGER_SEED_START, DAGGER_SEED_START + 1]
    base_frames = sum(r.length for r in index_demos(touch_data))
    assert [row["labels"] for row in report["rounds"]] == [base_frames, base_frames + sum(r.length for r in rollouts)]
    assert report["rounds"][1]["policy"].endswith("round_01/train/best")
    assert (tmp_path / "d" / "dagger.png").stat().st_size > 0
    config = (tmp_path / "d" / "round_01" / "train" / "config.yaml").read_text()
    assert "init_from: " + str(tiny_run / "best") in config and "labels: expert_actions" in config

    # A DAgger demo's labels after t are the expert's plans at states the policy chose: only step t is a target.
    from vlagym.dataio.windows import DemoWindows

    windows = DemoWindows([str(touch_data), str(tmp_path / "d" / "round_01" / "data")], horizon=3)
    sources = [windows.demos[int(windows[i]["index"][0])].source for i in range(len(windows))]
    masks = [windows[i]["action_mask"].tolist() for i in range(len(windows))]
    assert {tuple(m) for m, src in zip(masks, sources) if src == "dagger"} == {(True, False, False)}
    assert any(m == [True, True, True] for m, src in zip(masks, sources) if src == "expert")

    # Replay the first rollout: its executed actions reproduce its states, and at every one of them a
    # freshly made expert plans exactly the stored label (the experts read their phase from the state).
    ref = rollouts[0]
    with h5py.File(ref.path, "r") as f:
        demo = f["data"][ref.key]
        actions, labels = demo["actions"][()], demo["expert_actions"][()]
        assert demo.attrs["source"] == "dagger" and int(demo.attrs["round"]) == 1
    env = gym.make("vlagym/TabletopTouch-v0", image_size=32)
    obs, info = env.reset(seed=ref.seed)
    for t in range(len(actions)):
        expert = env.unwrapped.task.expert()
        expert.act(obs, info)
        np.testing.assert_allclose(expert.last_plan, labels[t], atol=1e-6, err_msg=f"step {t}")
        obs, _, terminated, truncated, info = env.step(actions[t])
    assert terminated or truncated
    env.close()


def test_on_policy_distillation_relabels_the_rounds_with_the_teacher(tiny_run, touch_data, tmp_path):
    # A distillation run (its config names the teacher) continued by DAgger: every round retrains on the teacher's
    # labels, over the data and the student's own rollouts.
    teacher = tmp_path / "teacher"
    train(TrainConfig(data=[str(touch_data)], policy="bcz", policy_overrides={**TINY_BCZ, "hidden_dim": 48},
                      out=str(teacher), steps=2, batch_size=4, num_workers=0, eval_every=0, warmup_steps=1,
                      threads=1), progress=False)
    student = tmp_path / "student"
    train(TrainConfig(data=[str(touch_data)], policy="bcz", policy_overrides=TINY_BCZ, out=str(student), steps=2,
                      batch_size=4, num_workers=0, eval_every=0, warmup_steps=1, threads=1, teacher=str(teacher),
                      distill_weight=0.8), progress=False)
    report = dagger(_cfg(student, tmp_path / "d"))
    round_cfg = yaml.safe_load((tmp_path / "d" / "round_01" / "train" / "config.yaml").read_text())
    assert round_cfg["teacher"] == str(teacher) and round_cfg["distill_weight"] == 0.8
    assert report["rounds"][1]["rollouts"] == 2
    # Or name the teacher for DAgger: a plain BC student becomes an on-policy distillation.
    dagger(_cfg(tiny_run, tmp_path / "d2", teacher=str(teacher)))
    round_cfg = yaml.safe_load((tmp_path / "d2" / "round_01" / "train" / "config.yaml").read_text())
    assert round_cfg["teacher"] == str(teacher) and round_cfg["distill_weight"] == 1.0


def test_changed_settings_are_refused_and_more_rounds_extend_the_run(tiny_run, tmp_path, capsys):
    dagger(_cfg(tiny_run, tmp_path / "d"))
    with pytest.raises(ValueError, match=r"different settings: episodes \(stored 2, requested 3\)"):
        dagger(_cfg(tiny_run, tmp_path / "d", episodes=3))
    first = index_demos(tmp_path / "d" / "round_01" / "data")
    report = dagger(_cfg(tiny_run, tmp_path / "d", rounds=2))
    assert [row["round"] for row in report["rounds"]] == [0, 1, 2]
    assert index_demos(tmp_path / "d" / "round_01" / "data") == first  # round 1 kept, not redone
    assert [r.seed for r in index_demos(tmp_path / "d" / "round_02" / "data")] == [DAGGER_SEED_START + 2,
                                                                                    DAGGER_SEED_START + 3]
    from vlagym.experiments.cli import main

    out = tmp_path / "both.png"
    assert main(["dagger-plot", str(tmp_path / "d"), str(tmp_path / "d"), "--labels", "a", "b",
                 "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert main(["dagger-plot", str(tmp_path / "d"), str(tmp_path / "d"), "--labels", "a", "--out", str(out)]) == 2
    assert "--labels gives 1 names for 2 runs" in capsys.readouterr().err


def test_sigkill_mid_round_resumes_without_loss_or_duplicates(tiny_run, tmp_path):
    out = tmp_path / "d"
    cmd = [sys.executable, "-m", "vlagym.experiments.cli", "dagger", "--policy", str(tiny_run), "--out", str(out),
           "--rounds", "1", "--episodes", "6", "--steps", "3", "--eval-episodes", "1", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    staging = out / "round_01" / "data" / "staging"
    deadline = time.time() + 120
    while not list(staging.glob("ep_*.hdf5")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "report.json").exists(), "the run finished before it could be killed mid-round"
    report = dagger(_cfg(tiny_run, out, episodes=6))
    seeds = [r.seed for r in index_demos(out / "round_01" / "data")]
    assert seeds == list(range(DAGGER_SEED_START, DAGGER_SEED_START + 6))
    assert report["rounds"][1]["rollouts"] == 6
    assert json.loads((out / "dagger.json").read_text())["episodes"] == 6


class _Frozen:
    """A driver that never moves the robot (zero motion, gripper open): the stall DAgger's intervention targets."""

    def reset(self) -> None:
        pass

    def act(self, obs, info):
        return np.array([0.0, 0.0, 0.0, 0.0, -1.0], dtype=np.float32)


def test_the_expert_takes_over_a_stalled_rollout():
    from vlagym.agents.collect import MixedAgent
    from vlagym.agents.rollout import run_episode

    env = gym.make("vlagym/TabletopPickUp-v0", obs_mode="state")
    agents = []

    def make(e, after):
        agents.append(MixedAgent(e, _Frozen(), 0.0, 0, intervene_after=after))
        return agents[-1]

    ep = run_episode(env, 0, lambda e: make(e, 5), keep_trajectory=True)
    # Still after the first step for 5 steps: the sixth action and every later one are the expert's.
    assert ep.success and agents[-1].intervened_at == 6
    assert np.abs(ep.trajectory.actions[:5, :4]).max() == 0.0
    np.testing.assert_allclose(ep.trajectory.actions[5:], ep.trajectory.expert_actions[5:])
    ep = run_episode(env, 0, lambda e: make(e, 0), keep_trajectory=True)  # no intervention: it never moves
    assert not ep.success and agents[-1].intervened_at is None
    env.close()
