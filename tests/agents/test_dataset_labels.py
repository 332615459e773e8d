"""Privileged labels in datasets: collected beside every frame, and datasets without them still load."""

from __future__ import annotations

import gymnasium as gym
import h5py
import numpy as np

from vlagym.agents.collect import CollectConfig, collect
from vlagym.dataio.dataset import index_demos, load_demo
from vlagym.dataio.robomimic_hdf5 import label_datasets


def test_collected_demos_carry_the_labels_of_each_frame(tmp_path):
    out = tmp_path / "place"
    collect(CollectConfig(env="vlagym/TabletopPlace-v0", episodes=2, out=str(out), workers=1,
                          env_kwargs={"image_size": 32, "wrist_camera": True}))
    ref = index_demos(out)[0]
    demo = load_demo(ref)
    labels = demo["labels"]
    assert set(labels) == {f"{role}/{k}" for role in ("object", "destination")
                           for k in ("pos", "yaw", "rgb/uv", "rgb/visible", "rgb_wrist/uv", "rgb_wrist/visible")}
    assert all(len(v) == len(demo["actions"]) for v in labels.values())
    # Row t is the label of the observation the action at t was chosen from: replay and compare.
    env = gym.make("vlagym/TabletopPlace-v0", image_size=32, wrist_camera=True)
    obs, info = env.reset(seed=ref.seed)
    for t in range(3):
        for k in labels:
            np.testing.assert_array_equal(labels[k][t], info["labels"][k], err_msg=f"{k} at step {t}")
        obs, _, _, _, info = env.step(demo["actions"][t])
    env.close()


def test_a_dataset_without_labels_still_loads(tmp_path):
    out = tmp_path / "touch"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=1, out=str(out), workers=1,
                          env_kwargs={"image_size": 32}))
    shard = next(out.glob("shard_*.hdf5"))
    with h5py.File(shard, "a") as f:  # as written before labels existed
        del f["data/demo_0/labels"]
    ref = index_demos(out)[0]
    assert "labels" not in load_demo(ref)
    with h5py.File(shard, "r") as f:
        assert label_datasets(f["data/demo_0"]) == {}
