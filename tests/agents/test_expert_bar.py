"""The experts' bar: at least 98% success over 200 seeded episodes per task (the README's figures)."""

from __future__ import annotations

import pytest

from vlagym.agents.rollout import Job, run_jobs, summarize
from vlagym.envs import ENV_IDS

STATE = (("obs_mode", "state"),)


def test_touch_expert_solves_fixed_seeds():
    episodes = run_jobs([Job("vlagym/TabletopTouch-v0", s, env_kwargs=STATE) for s in range(5)], workers=1)
    assert all(e.success for e in episodes), [(e.seed, e.instruction) for e in episodes if not e.success]


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_expert_success_over_200_seeds(env_id, noise):
    episodes = run_jobs([Job(env_id, 2_000_000 + s, noise=noise, env_kwargs=STATE) for s in range(200)], workers=2)
    summary = summarize(episodes)
    failed = [e.seed for e in episodes if not e.success]
    assert summary["success_rate"] >= 0.98, f"{env_id} noise={noise}: failed seeds {failed}"
