"""The push task: its expert solves it, its start is never solved, its sentence names the goal."""

from __future__ import annotations

import gymnasium as gym
import pytest

import vlagym  # noqa: F401  (registers the ids)
from vlagym.envs.tabletop.tasks.push import REGIONS, START_MARGIN


@pytest.fixture(scope="module")
def env():
    env = gym.make("vlagym/TabletopPush-v0", obs_mode="state")
    yield env
    env.close()


@pytest.mark.parametrize("seed", range(5))
def test_expert_solves_push(env, seed):
    obs, info = env.reset(seed=seed)
    expert = env.unwrapped.task.expert()
    while True:
        obs, _, terminated, truncated, info = env.step(expert.act(obs, info))
        if terminated or truncated:
            break
    short = info["target_distance"]
    assert info["success"], f"seed {seed}: {info['instruction']!r} ended {short:.3f} m short of the region"


def test_target_starts_outside_its_region(env):
    for seed in range(50):
        _, info = env.reset(seed=seed)
        task = env.unwrapped.task
        xy = task.sim.position(task.name_of(0))[:2]
        assert task.region.depth(xy) <= -START_MARGIN, f"seed {seed}: starts at {xy} ({task.side})"
        assert not info["success"] and info["target_distance"] >= START_MARGIN


def test_instruction_names_colour_shape_and_region(env):
    seen = set()
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        task = env.unwrapped.task
        target = task.objects[0]
        words = obs["instruction"].split()
        assert target.color in words and target.shape in words and task.side in words, obs["instruction"]
        seen.add(task.side)
    assert seen == set(REGIONS)
