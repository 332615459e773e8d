"""One evaluator behind every measurement: training's validation, the RL curve, ``vlagym eval`` and the suites.

The same policy on the same seeds must give the same episodes wherever it is played: in this process or in the
worker pool, as a live object or loaded from disk, through each caller. The reference is ``run_episode`` with
the policy loaded by hand, the loop training's validation used to copy. The policy is the shipped BC-Z
checkpoint, which succeeds on some of these seeds and fails on others, so an entry point that played a
different episode would show it in the successes, not only in the steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

import vlagym.assets
from vlagym.agents.evaluation import Cell, evaluate_agent, evaluate_cells, validation_success
from vlagym.agents.policy_agent import PolicyAgent, SB3Agent
from vlagym.agents.rollout import Episode, run_episode
from vlagym.core.env_args import make_env_args
from vlagym.core.splits import VAL_SEED_START
from vlagym.experiments.evaluate import evaluate
from vlagym.experiments.suites import run_suite
from vlagym.policies import load_policy

CHECKPOINT = Path(vlagym.assets.__file__).parent / "checkpoints" / "bcz_pickup_tiny"
ENV = "vlagym/TabletopPickUp-v0"
KWARGS = {"image_size": 64, "wrist_camera": True}  # its env_args.json, without the task
SEEDS = list(range(VAL_SEED_START, VAL_SEED_START + 6))
TIMING = ("agent_ms_per_step", "env_ms_per_step")


def played(episodes: list[Episode] | list[dict]) -> list[dict]:
    """What an episode was, without how long it took."""
    rows = [ep.summary() if isinstance(ep, Episode) else ep for ep in episodes]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def reference() -> list[Episode]:
    agent = PolicyAgent.load(CHECKPOINT)
    env = gym.make(ENV, **KWARGS)
    try:
        return [run_episode(env, seed, lambda e: agent) for seed in SEEDS]
    finally:
        env.close()


def test_the_reference_has_successes_and_failures(reference):
    outcomes = {ep.success for ep in reference}
    assert outcomes == {True, False}, [ep.success for ep in reference]  # else equal successes would prove little


def test_every_entry_point_plays_the_same_episodes(reference, tmp_path):
    want = played(reference)
    live = evaluate_agent(load_policy(CHECKPOINT), ENV, SEEDS, KWARGS)  # training's way: a policy in memory
    pooled = evaluate_agent(str(CHECKPOINT), ENV, SEEDS, KWARGS, workers=2)  # eval's way: a path, in workers
    assert played(live.episodes) == want
    assert played(pooled.episodes) == want
    assert live.successes == pooled.successes == [ep.success for ep in reference]

    report = evaluate(str(CHECKPOINT), [ENV], len(SEEDS), seed_start=SEEDS[0], workers=1, expert=False,
                      split="val", out=str(tmp_path / "eval"))
    assert played(report["agents"]["policy"]["episodes"]) == want
    assert report["agents"]["policy"]["overall"]["success_ci95"] == pooled.summary["success_ci95"]

    rate = sum(ep.success for ep in reference) / len(reference)
    assert validation_success(load_policy(CHECKPOINT), ENV, KWARGS, SEEDS) == rate == live.summary["success_rate"]


def test_suites_cells_are_the_evaluators(tmp_path):
    seeds = [2_000_000, 2_000_001]
    report = run_suite("generalization", str(CHECKPOINT), [ENV], episodes=len(seeds), workers=1, expert=False,
                       levels=["L1"])
    cell, = report["cells"]
    assert cell["seeds"] == seeds and cell["env_kwargs"] == {**KWARGS, "level": "L1"}
    direct = evaluate_agent(str(CHECKPOINT), ENV, seeds, {**KWARGS, "level": "L1"}, workers=1).summary
    assert {k: cell[k] for k in ("successes", "success_ci95", "mean_steps", "final_distance_mean")} == \
        {k: direct[k] for k in ("successes", "success_ci95", "mean_steps", "final_distance_mean")}


def test_rl_curve_point_is_the_evaluators(tmp_path):
    from vlagym.experiments.rl import RLConfig, build_model, make_vec_env, validation_point

    cfg = RLConfig(env="vlagym/TabletopTouch-v0", env_kwargs={"obs_mode": "state"}, instruction={"kind": "tokens"},
                   vec="dummy", n_envs=1, n_steps=16, batch_size=16, n_epochs=1, eval_episodes=3,
                   out=str(tmp_path / "rl"))
    venv = make_vec_env(cfg)
    try:
        model = build_model(cfg, venv)
        model.learn(16)
    finally:
        venv.close()
    seeds = list(range(VAL_SEED_START, VAL_SEED_START + cfg.eval_episodes))
    point = validation_point(model, cfg, t0=0.0)
    live = evaluate_agent(model, cfg.env, seeds, {"obs_mode": "state"})
    assert (point["successes"], point["success_rate"], [point["ci_low"], point["ci_high"]]) == \
        (live.summary["successes"], live.summary["success_rate"], live.summary["success_ci95"])

    env = gym.make(cfg.env, obs_mode="state")
    agent = SB3Agent(model, threads=None)
    want = played([run_episode(env, s, lambda e: agent) for s in seeds])
    env.close()
    assert played(live.episodes) == want
    run = Path(cfg.out)  # the model saved as an RL run: what `vlagym eval --policy RUN` plays
    model.save(run / "model.zip")
    (run / "env_args.json").write_text(json.dumps(make_env_args(cfg.env, {"obs_mode": "state"})))
    assert played(evaluate_agent(str(run), cfg.env, seeds, {"obs_mode": "state"}, workers=1).episodes) == want


def test_cells_share_one_pool_and_keep_their_order():
    expert = Cell("expert", "vlagym/TabletopTouch-v0", [3, 4], {"obs_mode": "state"})
    random = Cell("random", "vlagym/TabletopTouch-v0", [5], {"obs_mode": "state"})
    seen = []
    first, second = evaluate_cells([expert, random], workers=2,
                                   on_result=lambda c, i, ep: seen.append((c, i, ep.seed)))
    assert [ep.seed for ep in first.episodes] == [3, 4] and [ep.seed for ep in second.episodes] == [5]
    assert first.successes == [True, True] and first.summary["episodes"] == 2
    assert sorted(seen) == [(0, 0, 3), (0, 1, 4), (1, 0, 5)]
    # An episode already played (a resumed evaluation) is reused, not played again.
    again, = evaluate_cells([expert], done={(0, 0): first.episodes[0]},
                            on_result=lambda c, i, ep: seen.append(("again", i)))
    assert again.episodes[0] is first.episodes[0] and seen[-1] == ("again", 1)


def test_bad_sources_and_cells_are_named():
    played_first = []
    with pytest.raises(TypeError, match="cannot evaluate int 3: an agent source is"):  # before any episode
        evaluate_cells([Cell("expert", "vlagym/TabletopTouch-v0", [0], {"obs_mode": "state"}),
                        Cell(3, "vlagym/TabletopTouch-v0", [0], {"obs_mode": "state"})],
                       on_result=lambda *a: played_first.append(a))
    assert not played_first
    with pytest.raises(ValueError, match="no seeds for expert on vlagym/TabletopTouch-v0"):
        Cell("expert", "vlagym/TabletopTouch-v0", [])
    with pytest.raises(ValueError, match="record must be >= 0"):
        Cell("expert", "vlagym/TabletopTouch-v0", [0], record=-1)
