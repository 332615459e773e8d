"""Garbage is refused where training loads a dataset, naming file and demo (issue step 10, finding 7)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from vlagym.dataio.dataset import DatasetError
from vlagym.dataio.windows import ACTION_MARGIN, DemoWindows
from vlagym.policies.normalize import ActionCodec, ProprioNormalizer


def _set(path: Path, name: str, row: int, dim: int, value: float) -> None:
    with h5py.File(path / "shard_00000.hdf5", "a") as f:
        f[f"data/demo_1/{name}"][row, dim] = value


def test_huge_actions_are_refused_naming_file_demo_and_row(touch_copy):
    _set(touch_copy, "actions", 3, 1, 1e30)
    with pytest.raises(DatasetError, match=r"shard_00000.hdf5 \[demo_1\] actions: row 3 dimension 1 = 1e\+30 "
                                           r"lies outside the action space \[-1, 1\]"):
        DemoWindows(touch_copy)


def test_actions_within_the_margin_pass_and_beyond_it_fail(touch_copy):
    _set(touch_copy, "actions", 0, 0, 1.0 + 2 * ACTION_MARGIN * 0.99)  # range 2: the margin is 0.2
    (touch_copy / "stats.json").unlink()
    DemoWindows(touch_copy)
    _set(touch_copy, "actions", 0, 0, -1.0 - 2 * ACTION_MARGIN * 1.01)
    with pytest.raises(DatasetError, match="outside the action space"):
        DemoWindows(touch_copy)


def test_non_finite_values_are_refused(touch_copy):
    _set(touch_copy, "obs/proprio", 2, 0, np.nan)
    with pytest.raises(DatasetError, match=r"shard_00000.hdf5 \[demo_1\] proprio: row 2 holds nan"):
        DemoWindows(touch_copy)
    with h5py.File(touch_copy / "shard_00000.hdf5", "a") as f:
        f["data/demo_1/obs/proprio"][2, 0] = 0.0
        f["data/demo_0/expert_actions"][0, 2] = np.inf
    DemoWindows(touch_copy)  # only the labels trained on are checked
    with pytest.raises(DatasetError, match=r"\[demo_0\] expert_actions: row 0 holds inf"):
        DemoWindows(touch_copy, action_key="expert_actions")


def test_stats_json_with_std_zero_on_a_moving_dimension_is_refused(touch_copy):
    stats = json.loads((touch_copy / "stats.json").read_text())
    moving = int(np.argmax(stats["actions"]["std"]))
    stats["actions"]["std"][moving] = 0.0
    (touch_copy / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(DatasetError, match=rf"stats.json \[actions\]: std\[{moving}\] = 0 but the data gives "
                                           r".*std 0 on a dimension that varies"):
        DemoWindows(touch_copy).action_stats()
    stats["actions"]["std"][moving] = float("nan")
    (touch_copy / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(DatasetError, match=rf"std\[{moving}\] = nan is not finite"):
        DemoWindows(touch_copy).action_stats()


def test_a_genuinely_constant_dimension_is_floored_not_refused(touch_data):
    """Touch never moves its last two action dimensions: std 0 there is true, accepted, and its
    targets stay exactly 0 (the normaliser's MIN_STD floor)."""
    ds = DemoWindows(touch_data)
    stats = ds.action_stats()
    constant = [i for i, (lo, hi) in enumerate(zip(stats["min"], stats["max"])) if lo == hi]
    assert constant and all(stats["std"][i] == 0.0 for i in constant)
    codec = ActionCodec(stats, [-1.0] * 5, [1.0] * 5)
    actions = torch.from_numpy(np.concatenate(_actions(touch_data))).float()
    targets = codec.continuous_targets(actions)
    assert torch.isfinite(targets).all() and targets[:, constant].abs().max() == 0
    assert targets.abs().max() < 50


def test_normalisers_refuse_non_finite_statistics():
    good = {"mean": [0.0, 0.0], "std": [1.0, 0.0], "min": [-1.0, 0.0], "max": [1.0, 0.0]}
    ActionCodec(good, [-1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"action statistics: std\[1\] = nan is not finite"):
        ActionCodec({**good, "std": [1.0, float("nan")]}, [-1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"proprio statistics: std\[0\] = -1.0 is negative"):
        ProprioNormalizer({"mean": [0.0], "std": [-1.0]})


def _actions(root: Path) -> list[np.ndarray]:
    with h5py.File(root / "shard_00000.hdf5") as f:
        return [f["data"][k]["actions"][()] for k in f["data"]]
