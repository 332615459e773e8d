"""Pick up, place, stack: each expert solves its task (the bot test) and each sentence names its objects."""

from __future__ import annotations

import gymnasium as gym
import pytest

import vlagym  # noqa: F401  (registers the ids)

MANIP_IDS = ["vlagym/TabletopPickUp-v0", "vlagym/TabletopPlace-v0", "vlagym/TabletopStack-v0"]


@pytest.fixture(scope="module", params=MANIP_IDS)
def env(request):
    env = gym.make(request.param, obs_mode="state")
    yield env
    env.close()


def test_expert_solves_seeds(env):
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        assert not info["success"], f"seed {seed}: solved before any action"
        expert = env.unwrapped.task.expert()
        while True:
            obs, _, terminated, truncated, info = env.step(expert.act(obs, info))
            if terminated or truncated:
                break
        assert info["success"], (f"seed {seed}: {info['instruction']!r} failed in phase {expert.phase!r}, "
                                 f"{info['target_distance']:.3f} m from the goal")


def test_instruction_names_the_task_objects(env):
    task = env.unwrapped.task
    own = 1 if task.name == "pick_up" else 2  # the target, and the bowl or bottom cube
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        phrases = [f"{spec.color} {spec.shape}" for spec in task.objects[:own]]
        for phrase in phrases:
            assert phrase in obs["instruction"], (obs["instruction"], phrase)
        # The object to move comes first: "stack the purple cube on the orange cube".
        assert obs["instruction"].index(phrases[0]) < obs["instruction"].index(phrases[-1]) or own == 1
        assert "target_distance" in env.unwrapped._info()
