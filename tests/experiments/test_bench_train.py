"""vlagym bench train: the training loop's samples/s beside a bare forward/backward of the same model."""

from __future__ import annotations

import yaml

from vlagym.agents.collect import CollectConfig, collect
from vlagym.experiments.cli import main


def test_bench_train_reports_both_rates_and_their_ratio(tmp_path, capsys):
    data = tmp_path / "touch"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=2, out=str(data), workers=1,
                          env_kwargs={"image_size": 32}))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": [str(data)], "policy": "bcz", "batch_size": 4, "num_workers": 0,
                                      "policy_overrides": {"text_encoder": "hash", "text_dim": 8, "hidden_dim": 16}}))
    out = tmp_path / "bench.json"
    assert main(["bench", "train", "--config", str(config), "threads=1", "--steps", "12", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "real loop" in printed and "ratio" in printed
    row = yaml.safe_load(out.read_text())
    assert row["real_samples_per_s"] > 0 and row["bare_samples_per_s"] > 0
    assert row["ratio"] == row["real_samples_per_s"] / row["bare_samples_per_s"]
    assert row["threads"] == 1 and row["steps"] == 12
