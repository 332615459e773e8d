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


def _suite_report(suite, rates, seeds=(2_000_000, 2_000_001, 2_000_002, 2_000_003), expert=True):
    """A suite report as run_suite writes it, with the given policy success counts per condition."""
    from vlagym.core.stats import wilson_interval

    cells = []
    for cond, successes in rates.items():
        key = {"level": cond} if suite == "generalization" else {"perturbation": cond[0], "strength": cond[1]}
        for agent, k in (("policy", successes), ("expert", len(seeds))) if expert else (("policy", successes),):
            cells.append({"agent": agent, "env_id": ENV, **key, "seeds": list(seeds), "episodes": len(seeds),
                          "successes": k, "success_rate": k / len(seeds),
                          "success_ci95": list(wilson_interval(k, len(seeds)))})
    return {"suite": suite, "policy": "runs/x", "policy_trained_with": {}, "cells": cells}


def test_suite_compare_puts_policies_side_by_side(tmp_path):
    from vlagym.experiments.cli import main

    plain = _suite_report("robustness", {("none", 0.0): 3, ("colors", 1.0): 0})
    randomised = _suite_report("robustness", {("none", 0.0): 2, ("colors", 1.0): 2, ("light", 1.0): 1})
    for name, report in (("plain", plain), ("rand", randomised)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(report))
    assert main(["suite-compare", str(tmp_path / "plain"), str(tmp_path / "rand"), "--labels", "BC-Z",
                 "BC-Z randomised", "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| condition | BC-Z | BC-Z randomised | expert |" in md
    assert "| TabletopTouch-v0 colors 1 | 0% (0%-49%), 0/4 | 50% (15%-85%), 2/4 | 100% (51%-100%), 4/4 |" in md
    assert "| TabletopTouch-v0 light 1 | - | 25% (5%-70%), 1/4 |" in md  # run by one policy only
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["condition"] for r in saved["rows"]] == ["TabletopTouch-v0 none", "TabletopTouch-v0 colors 1",
                                                       "TabletopTouch-v0 light 1"]
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 5000


def test_suite_compare_refuses_what_cannot_be_compared():
    from vlagym.experiments.suites import compare_suites

    gen = _suite_report("generalization", {"L1": 2})
    rob = _suite_report("robustness", {("none", 0.0): 2})
    with pytest.raises(ValueError, match="cannot compare different suites"):
        compare_suites([gen, rob], ["a", "b"])
    other_seeds = _suite_report("generalization", {"L1": 2}, seeds=(2_000_010, 2_000_011))
    with pytest.raises(ValueError, match="TabletopTouch-v0 L1: report 'b' ran other seeds"):
        compare_suites([gen, other_seeds], ["a", "b"])
    with pytest.raises(ValueError, match="1 labels for 2 reports"):
        compare_suites([gen, gen], ["a"])
    with pytest.raises(ValueError, match="labels must be distinct"):
        compare_suites([gen, gen], ["a", "a"])
    expert_only = {**gen, "cells": [c for c in gen["cells"] if c["agent"] == "expert"]}
    with pytest.raises(ValueError, match="report 'b' holds no policy"):
        compare_suites([gen, expert_only], ["a", "b"])


def test_suite_compare_names_a_missing_or_wrong_report(tmp_path):
    from vlagym.experiments.suites import load_suite_report

    with pytest.raises(FileNotFoundError, match="no suite report at"):
        load_suite_report(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"job": "eval", "agents": {}}))
    with pytest.raises(ValueError, match="is not a suite report"):
        load_suite_report(tmp_path)
