"""``vlagym data-efficiency``: one training run per demonstration count, evaluated on the same test seeds."""

from __future__ import annotations

import json

import pytest
import yaml

from vlagym.agents.collect import CollectConfig, collect
from vlagym.experiments.efficiency import run_efficiency

TINY = {"policy": "bcz", "steps": 3, "batch_size": 4, "num_workers": 0, "eval_every": 0, "save_every": 3,
        "warmup_steps": 1, "threads": 1,
        "policy_overrides": {"text_encoder": "hash", "text_dim": 16, "hidden_dim": 32, "horizon": 2,
                             "backbone_width": 8, "pool": "spatial_softmax"}}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("eff")
    data = root / "touch"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=str(data), workers=1,
                          env_kwargs={"image_size": 32}))
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data": [str(data)]}))
    return path


def test_one_run_per_count_then_resume(config, tmp_path):
    out = tmp_path / "eff"
    summary = run_efficiency(str(config), [], [1, 3], episodes=2, out=out, workers=1, log=lambda *_: None)
    assert [r["demos"] for r in summary["rows"]] == [1, 3]
    for r in summary["rows"]:
        assert r["episodes"] == 2 and 0 <= r["ci95"][0] <= r["success_rate"] <= r["ci95"][1] <= 1
        cfg = yaml.safe_load((tmp_path / "eff" / f"demos_{r['demos']:04d}" / "config.yaml").read_text())
        assert cfg["max_demos"] == r["demos"]
    assert summary["expert"]["success_rate"] == 1.0  # the expert row is run once, on the same seeds
    assert (out / "efficiency.png").stat().st_size > 1000
    assert "| 3 |" in (out / "efficiency.md").read_text()
    assert json.loads((out / "efficiency.json").read_text())["rows"] == summary["rows"]
    # A rerun reuses every finished evaluation instead of training again.
    logs = []
    again = run_efficiency(str(config), [], [1, 3], episodes=2, out=out, workers=1, log=logs.append)
    assert again["rows"] == summary["rows"] and all("reusing" in m for m in logs)


def test_more_demos_than_the_data_holds_is_refused(config, tmp_path):
    with pytest.raises(ValueError, match="holds 3 demos"):
        run_efficiency(str(config), [], [2, 5], episodes=2, out=tmp_path / "x")
