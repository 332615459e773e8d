"""``vlagym eval --suite``: levels and perturbations for a (tiny, really trained) policy beside the expert."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vlagym.agents.collect import CollectConfig, collect
from vlagym.experiments.suites import run_suite, supported_levels
from vlagym.policies.train import TrainConfig, train

ENV = "vlagym/TabletopTouch-v0"
TINY_BCZ = {"text_encoder": "hash", "text_dim": 16, "hidden_dim": 32, "horizon": 3}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    collect(CollectConfig(env=ENV, episodes=3, out=str(root / "data"), workers=1, env_kwargs={"image_size": 32},
                          level="train"))
    train(TrainConfig(data=[str(root / "data")], policy="bcz", policy_overrides=TINY_BCZ, out=str(root / "run"),
                      steps=4, batch_size=4, num_workers=0, eval_every=0, save_every=4, log_every=2,
                      warmup_steps=1, threads=1), progress=False)
    return root / "run"


def test_generalization_suite_report_and_plot(policy, tmp_path):
    report = run_suite("generalization", str(policy), [ENV], episodes=2, workers=2, out=str(tmp_path))
    assert supported_levels(ENV) == ("L1", "L2", "L3", "L4", "L5")
    assert supported_levels("vlagym/TabletopPickUp-v0") == ("L1", "L2", "L3", "L4")
    cells = report["cells"]
    assert {(c["agent"], c["level"]) for c in cells} == {(a, lv) for a in ("policy", "expert")
                                                          for lv in ("L1", "L2", "L3", "L4", "L5")}
    seeds = {c["level"]: set(c["seeds"]) for c in cells if c["agent"] == "expert"}
    assert all(min(s) >= 2_000_000 for s in seeds.values())
    levels = sorted(seeds)
    assert all(not seeds[a] & seeds[b] for a in levels for b in levels if a < b), "levels share test seeds"
    for c in cells:
        assert c["episodes"] == 2 and c["success_ci95"][0] <= c["success_rate"] <= c["success_ci95"][1]
        want = "train" if c["level"] == "L1" else c["level"]
        assert c["episode_splits"] == [want], c
        assert c["env_kwargs"]["image_size"] == 32  # the env the policy was trained on
    assert all(c["success_rate"] == 1.0 for c in cells if c["agent"] == "expert")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["suite"] == "generalization" and len(saved["cells"]) == len(cells)
    assert (tmp_path / "generalization.png").stat().st_size > 5000
    assert "| policy | vlagym/TabletopTouch-v0 | L3 (novel colour) | 2 |" in (tmp_path / "report.md").read_text()


def test_generalization_suite_runs_l5_where_defined(tmp_path):
    nav = "vlagym/NavMultiStep-v0"
    assert supported_levels(nav) == ("L1", "L2", "L3", "L4", "L5")
    report = run_suite("generalization", None, [nav], episodes=1, workers=1, levels=["L1", "L5"],
                       env_kwargs={"image_size": 32})
    cells = {c["level"]: c for c in report["cells"]}
    assert set(cells) == {"L1", "L5"} and cells["L5"]["episode_splits"] == ["L5"]
    assert cells["L5"]["seeds"][0] == 2_000_000 + 4  # level k uses its own block of seeds


def test_robustness_suite_changes_images_only(policy, tmp_path):
    report = run_suite("robustness", str(policy), [ENV], episodes=2, workers=2, out=str(tmp_path),
                       perturbations=["light", "occluder"], strengths=[0.5, 1.0])
    cells = report["cells"]
    assert {(c["perturbation"], c["strength"]) for c in cells} == {
        ("none", 0.0), ("light", 0.5), ("light", 1.0), ("occluder", 0.5), ("occluder", 1.0)}
    assert len({tuple(c["seeds"]) for c in cells}) == 1, "strengths should share their test seeds"
    expert = [c for c in cells if c["agent"] == "expert"]
    # The expert reads simulator state: perturbations change no outcome, not even an episode's length.
    assert len({(c["successes"], c["mean_steps"]) for c in expert}) == 1
    assert all(c["env_kwargs"]["level"] == "L1" for c in cells)
    assert (tmp_path / "robustness.png").stat().st_size > 5000


def test_suite_errors():
    with pytest.raises(ValueError, match="suite must be one of"):
        run_suite("speed", None, [ENV], 1)
    with pytest.raises(ValueError, match="must lie in the test split"):
        run_suite("robustness", None, [ENV], 1, seed_start=0)
    with pytest.raises(ValueError, match="unknown perturbation 'fog'"):
        run_suite("robustness", None, [ENV], 1, perturbations=["fog"])
    with pytest.raises(ValueError, match="strengths must be in"):
        run_suite("robustness", None, [ENV], 1, strengths=[0.0])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        run_suite("generalization", None, [ENV], 1, expert=False)


def test_cli_suite_expert_only(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "eval", "--suite", "robustness", "--env",
                          ENV, "--episodes", "1", "--workers", "1", "--perturbations", "noise", "--strengths", "1",
                          "--kwargs", "image_size=32", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| expert | vlagym/TabletopTouch-v0 | noise | 1 | 1 |" in res.stdout
    assert (tmp_path / "robustness.png").exists()
    res = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "eval", "--env", ENV],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "eval needs --policy" in res.stderr
