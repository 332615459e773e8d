"""``collect --level``: training seeds come only from the training side; the level is recorded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vlagym.agents.collect import CollectConfig, collect
from vlagym.dataio.dataset import index_demos, read_manifest
from vlagym.envs.levels import SYNONYMS
from vlagym.envs.tabletop.tasks.touch import TouchTask


def test_collect_train_level_records_it_and_keeps_to_trained_templates(tmp_path):
    out = tmp_path / "touch"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=str(out), workers=1,
                          env_kwargs={"image_size": 32}, level="train"))
    manifest = read_manifest(out)
    assert manifest["level"] == "train" and manifest["env_args"]["env_kwargs"]["level"] == "train"
    trained = TouchTask.templates[:-2]
    for ref in index_demos(out):
        words = ref.instruction.split()
        assert any(ref.instruction.startswith(t.split("{")[0]) for t in trained), ref.instruction
        assert not set(words) & set(SYNONYMS.values()) and "pink" not in words


def test_collect_refuses_held_out_levels_on_training_seeds():
    for level in ("L1", "L2", "L3", "L4", "L5"):
        with pytest.raises(ValueError, match="training seeds are drawn only from the training side"):
            CollectConfig(env="vlagym/TabletopTouch-v0", episodes=1, out="x", level=level)
    with pytest.raises(ValueError, match="level given twice"):
        CollectConfig(env="vlagym/TabletopTouch-v0", episodes=1, out="x", level="train",
                      env_kwargs={"level": "L2"})
    with pytest.raises(ValueError, match="training side"):  # a level smuggled in as an env kwarg
        CollectConfig(env="vlagym/TabletopTouch-v0", episodes=1, out="x", env_kwargs={"level": "L3"})
    cfg = CollectConfig(env="vlagym/TabletopTouch-v0", episodes=1, out="x", split="test", level="L3")
    assert cfg.env_kwargs["level"] == "L3"


def test_cli_collect_level_flag(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "collect", "--env",
                          "vlagym/TabletopTouch-v0", "--episodes", "1", "--out", str(tmp_path / "d"),
                          "--level", "L2"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "use --level train" in res.stderr
