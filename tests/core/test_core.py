"""The bottom layer: one split table, the resume comparison, env_args.json keys."""

from __future__ import annotations

import pytest

from vlagym.core.env_args import ENV_KEY, env_id_of, make_env_args
from vlagym.core.resume import check_same_settings, differing_keys, settings_differences
from vlagym.core.splits import SPLIT_SEED_START, SPLIT_SIZE, TEST_SEED_START, VAL_SEED_START, split_of


def test_splits_are_one_table():
    assert (VAL_SEED_START, TEST_SEED_START) == (SPLIT_SEED_START["val"], SPLIT_SEED_START["test"])
    assert [split_of(s) for s in (0, SPLIT_SIZE - 1, VAL_SEED_START, TEST_SEED_START)] == [
        "train", "train", "val", "test"]
    with pytest.raises(ValueError, match="outside every split"):
        split_of(TEST_SEED_START + SPLIT_SIZE)


def test_settings_differences_name_dotted_keys_with_both_values():
    stored = {"episodes": 2, "env_kwargs": {"level": "train", "size": 64}, "workers": 1}
    wanted = {"episodes": 3, "env_kwargs": {"level": "train", "wrist": True}, "workers": 4}
    assert settings_differences(stored, wanted, free=("workers",)) == [
        "env_kwargs.size (stored 64, requested '<absent>')",
        "env_kwargs.wrist (stored '<absent>', requested True)",
        "episodes (stored 2, requested 3)",
    ]
    assert differing_keys(stored, wanted, free=("workers",)) == ["env_kwargs", "episodes"]
    assert not settings_differences(stored, dict(stored)) and not differing_keys(stored, dict(stored))
    # A nested key named like a free top-level key is still compared.
    assert settings_differences({"a": {"workers": 1}}, {"a": {"workers": 2}}, free=("workers",))


def test_check_same_settings_refuses_with_the_differences():
    check_same_settings("run", {"lr": 1e-3}, {"lr": 1e-3}, "hint")
    with pytest.raises(ValueError, match=r"run holds a run with different settings: lr \(stored 0.001, "
                                         r"requested 0.01\); use another out="):
        check_same_settings("run", {"lr": 1e-3}, {"lr": 1e-2}, "use another out=")


def test_env_args_one_key_and_old_rl_runs_still_read():
    assert make_env_args("vlagym/TabletopTouch-v0", {}) == {ENV_KEY: "vlagym/TabletopTouch-v0", "env_kwargs": {}}
    assert ENV_KEY == "env_name"  # robomimic's key, as in the dataset's data.attrs["env_args"]
    assert env_id_of({"env_name": "a", "env_kwargs": {}}) == "a"
    assert env_id_of({"env_id": "b", "env_kwargs": {}}) == "b"  # written by vlagym rl before the keys were one
    assert env_id_of({"env_kwargs": {}}) is None
