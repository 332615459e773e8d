"""Training windows: history/horizon padding, masks and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vlagym.agents.collect import CollectConfig, collect
from vlagym.dataio.dataset import index_demos, load_demo
from vlagym.dataio.windows import DemoWindows, augment_images


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("win") / "ds"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=2, out=str(out), workers=1,
                          env_kwargs={"image_size": 32}))
    return out


def test_windows_pad_and_mask(dataset):
    ds = DemoWindows(dataset, history=3, horizon=4)
    demo = load_demo(index_demos(dataset)[0])
    n = len(demo["actions"])
    assert len(ds) == sum(r.length for r in ds.demos)
    first = ds[0]
    assert first["rgb"].shape == (3, 3, 32, 32) and first["rgb"].dtype == torch.uint8
    assert first["obs_mask"].tolist() == [False, False, True]
    for k in range(3):  # padding repeats the first frame
        np.testing.assert_array_equal(first["rgb"][k].permute(1, 2, 0).numpy(), demo["obs"]["rgb"][0])
    np.testing.assert_allclose(first["actions"].numpy(), demo["actions"][:4])
    last = ds[n - 1]
    assert last["obs_mask"].all()
    assert last["action_mask"].tolist() == [True, False, False, False]
    for k in range(4):  # padding repeats the last action
        np.testing.assert_allclose(last["actions"][k].numpy(), demo["actions"][n - 1])
    np.testing.assert_array_equal(last["rgb"][-1].permute(1, 2, 0).numpy(), demo["obs"]["rgb"][n - 1])
    assert last["proprio"].shape == (3, 6) and last["instruction"] == index_demos(dataset)[0].instruction


def test_augmentation_changes_pixels_not_shapes(dataset):
    plain = DemoWindows(dataset, history=2, horizon=1)
    aug = DemoWindows(dataset, history=2, horizon=1, augment=True, shift=4, jitter=0.3)
    torch.manual_seed(0)
    a, b = plain[3]["rgb"], aug[3]["rgb"]
    assert a.shape == b.shape and b.dtype == torch.uint8
    assert not torch.equal(a, b)
    same = augment_images(a, np.random.default_rng(0), shift=0, jitter=0.0)
    assert torch.equal(same, a)


def test_dataloader_with_workers_and_stats(dataset):
    ds = DemoWindows(dataset, history=6, horizon=10, augment=True)
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)))
    assert batch["rgb"].shape == (4, 6, 3, 32, 32) and batch["actions"].shape == (4, 10, 5)
    assert len(batch["instruction"]) == 4
    stats = ds.action_stats()
    assert len(stats["mean"]) == 5 and all(lo <= hi for lo, hi in zip(stats["min"], stats["max"]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="history"):
        DemoWindows("unused", history=0)


def test_expert_labels_replace_the_executed_actions(tmp_path):
    out = tmp_path / "noisy"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=1, out=str(out), workers=1, noise=0.3,
                          env_kwargs={"image_size": 32}))
    demo = load_demo(index_demos(out)[0])
    executed = DemoWindows(out, horizon=3)
    clean = DemoWindows(out, horizon=3, action_key="expert_actions")
    assert len(demo["actions"]) >= 3
    np.testing.assert_array_equal(clean[0]["actions"].numpy(), demo["expert_actions"][:3])
    np.testing.assert_array_equal(executed[0]["actions"].numpy(), demo["actions"][:3])
    assert clean.action_stats()["mean"] != executed.action_stats()["mean"]
    with pytest.raises(ValueError, match="action_key"):
        DemoWindows(out, action_key="plans")


def test_expert_labels_missing_are_named(tmp_path):
    import shutil

    import h5py

    out = tmp_path / "old"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=1, out=str(out), workers=1,
                          env_kwargs={"image_size": 32}))
    shard = next(out.glob("shard_*.hdf5"))
    with h5py.File(shard, "a") as f:  # a dataset from before expert labels were stored
        del f["data/demo_0/expert_actions"]
    assert DemoWindows(out)[0]["actions"].shape == (1, 5)
    with pytest.raises(KeyError, match="expert_actions"):
        DemoWindows(out, action_key="expert_actions")
    shutil.rmtree(out)
