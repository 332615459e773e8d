"""``vlagym regress check``: a policy's success bar is judged by the Wilson lower bound."""

from __future__ import annotations

from vlagym.agents.collect import CollectConfig, collect
from vlagym.experiments.cli import main
from vlagym.policies.train import TrainConfig, train

TINY_BCZ = {"text_encoder": "hash", "text_dim": 16, "hidden_dim": 32, "horizon": 3}


def test_regress_check_exit_codes(tmp_path, capsys):
    data = tmp_path / "data"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=2, out=str(data), workers=1,
                          env_kwargs={"image_size": 32}))
    summary = train(TrainConfig(data=[str(data)], policy="bcz", policy_overrides=TINY_BCZ, out=str(tmp_path / "run"),
                                steps=2, batch_size=4, warmup_steps=1, eval_every=0, num_workers=0, threads=1),
                    progress=False)
    args = ["regress", "check", "--policy", summary["best_policy"], "--env", "vlagym/TabletopTouch-v0",
            "--episodes", "2", "--workers", "1"]
    assert main([*args, "--min-success", "0.0"]) == 0
    assert main([*args, "--min-success", "0.99"]) == 1  # two episodes cannot prove 99%
    assert "FAIL: vlagym/TabletopTouch-v0" in capsys.readouterr().out
