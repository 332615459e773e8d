"""Demonstration datasets: round trip, replay, resume after a real kill, corruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from vlagym.agents.collect import CollectConfig, collect
from vlagym.dataio.dataset import DatasetError, index_demos, load_demo, read_manifest

ENV = "vlagym/TabletopTouch-v0"
SMALL = {"image_size": 32}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "touch"
    collect(CollectConfig(env=ENV, episodes=4, out=str(out), workers=2, env_kwargs=SMALL, shard_size=3))
    return out


def test_layout_and_manifest(dataset):
    manifest = read_manifest(dataset)
    assert manifest["episodes"] == 4 and manifest["split"] == "train"
    assert manifest["shards"] == ["shard_00000.hdf5", "shard_00001.hdf5"]  # 3 + 1 with shard_size 3
    assert manifest["env_args"]["env_name"] == ENV and manifest["env_args"]["env_kwargs"]["image_size"] == 32
    for key in ("vlagym_version", "git_revision", "renderer", "noise", "seed_range", "wall_time_s",
                "dropped_failures"):
        assert key in manifest
    with h5py.File(dataset / "shard_00000.hdf5") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
        assert env_args["env_name"] == ENV
        demo = f["data/demo_0"]
        assert demo["obs/rgb"].dtype == np.uint8 and demo["obs/rgb"].shape[1:] == (32, 32, 3)
        assert demo["obs/rgb"].compression == "gzip" and demo["obs/rgb"].chunks == (1, 32, 32, 3)
        assert demo["actions"].shape == (demo.attrs["num_samples"], 5)
        assert demo["rewards"][-1] == 1.0 and bool(demo["dones"][-1])
        assert demo.attrs["success"] and demo.attrs["instruction"]
    stats = json.loads((dataset / "stats.json").read_text())
    assert len(stats["actions"]["mean"]) == 5


def test_seeds_are_first_successes_of_the_split(dataset):
    refs = index_demos(dataset)
    seeds = [r.seed for r in refs]
    dropped = read_manifest(dataset)["dropped_seeds"]
    assert sorted(seeds + dropped) == list(range(max(seeds) + 1))


def test_replay_reproduces_observations(dataset):
    env = gym.make(ENV, **SMALL)
    for ref in index_demos(dataset)[:2]:
        demo = load_demo(ref)
        obs, _ = env.reset(seed=ref.seed)
        assert obs["instruction"] == ref.instruction
        for t, action in enumerate(demo["actions"]):
            assert obs["rgb"].tobytes() == demo["obs"]["rgb"][t].tobytes(), f"seed {ref.seed} step {t}"
            np.testing.assert_array_equal(obs["proprio"], demo["obs"]["proprio"][t])
            obs, reward, *_ = env.step(action)
            assert reward == demo["rewards"][t]


def test_splits_are_disjoint_and_checked(tmp_path):
    with pytest.raises(ValueError, match="not in the train split"):
        CollectConfig(env=ENV, episodes=1, out=str(tmp_path), split="train", seed_start=2_000_000)
    with pytest.raises(ValueError, match="split must be one of"):
        CollectConfig(env=ENV, episodes=1, out=str(tmp_path), split="holdout")
    assert CollectConfig(env=ENV, episodes=1, out=str(tmp_path), split="test").seed_start == 2_000_000


def test_resume_refuses_different_settings(dataset):
    with pytest.raises(ValueError, match="different settings"):
        collect(CollectConfig(env=ENV, episodes=4, out=str(dataset), env_kwargs=SMALL, shard_size=3, noise=0.2))


def test_corrupt_files_are_named(tmp_path, dataset):
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (dataset / "shard_00000.hdf5").read_bytes()
    (broken / "shard_00000.hdf5").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="shard_00000.hdf5"):
        index_demos(broken)
    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "shard_00000.hdf5").write_bytes(data)
    with h5py.File(missing / "shard_00000.hdf5", "a") as f:
        del f["data/demo_1/rewards"]
    with pytest.raises(DatasetError, match=r"demo_1.*rewards"):
        index_demos(missing)
    with pytest.raises(FileNotFoundError, match="no dataset"):
        index_demos(tmp_path / "nowhere")


def test_resume_after_kill(tmp_path):
    """Kill a real collection process mid-run; rerunning the command ends with exactly N episodes,
    the same seeds an uninterrupted run keeps."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vlagym.experiments.cli", "collect", "--env", ENV, "--episodes", "12",
           "--workers", "1", "--image-size", "32", "--shard-size", "5", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "staging").glob("ep_*.hdf5"))) < 3:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    staged = len(list((out / "staging").glob("ep_*.hdf5")))
    assert 3 <= staged < 12 and not (out / "manifest.json").exists(), "the kill came too late to test resume"
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    refs = index_demos(out)
    assert len(refs) == 12 and len({r.seed for r in refs}) == 12
    reference = tmp_path / "reference"
    collect(CollectConfig(env=ENV, episodes=12, out=str(reference), env_kwargs=SMALL, shard_size=5))
    assert [r.seed for r in refs] == [r.seed for r in index_demos(reference)]
    a, b = load_demo(refs[7]), load_demo(index_demos(reference)[7])
    assert a["obs"]["rgb"].tobytes() == b["obs"]["rgb"].tobytes()


def test_noisy_collection_stores_the_experts_noiseless_labels(tmp_path):
    out = tmp_path / "noisy"
    collect(CollectConfig(env=ENV, episodes=1, out=str(out), workers=1, env_kwargs=SMALL, noise=0.3))
    ref = index_demos(out)[0]
    demo = load_demo(ref)
    executed, planned = demo["actions"], demo["expert_actions"]
    assert planned.shape == executed.shape and planned.dtype == np.float32
    # Noise moves the arm dimensions only; the gripper bit is never noised.
    assert np.abs(executed[:, :4] - planned[:, :4]).mean() > 0.05
    np.testing.assert_array_equal(executed[:, 4], planned[:, 4])
    # Replaying the executed actions, the expert re-plans the stored label at every state.
    env = gym.make(ENV, **SMALL)
    obs, info = env.reset(seed=ref.seed)
    expert = env.unwrapped.task.expert()
    for t, action in enumerate(executed):
        np.testing.assert_allclose(expert.act(obs, info), planned[t], atol=1e-6, err_msg=f"step {t}")
        obs, _, _, _, info = env.step(action)
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats) >= {"actions", "expert_actions", "proprio"}
