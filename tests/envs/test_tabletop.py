"""Tabletop environments: Gymnasium's contract, determinism, bad input, rendering budget."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import vlagym
from vlagym.envs import TABLETOP_IDS


def test_all_tasks_registered():
    assert {i.split("/")[1] for i in TABLETOP_IDS} >= {
        "TabletopTouch-v0", "TabletopPickUp-v0", "TabletopPlace-v0", "TabletopPush-v0", "TabletopStack-v0"}


def test_check_env_and_random_rollout(tabletop_id):
    env = gym.make(tabletop_id, image_size=64)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=1)
    env.action_space.seed(1)
    for _ in range(15):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert obs["rgb"].dtype == np.uint8 and obs["rgb"].shape == (64, 64, 3)
        assert isinstance(info["success"], bool)
        assert reward in (0.0, 1.0)
        if term or trunc:
            break
    env.close()


def _rollout(env_id, seed, steps=8, **kw):
    env = gym.make(env_id, **kw)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)  # the same action sequence for both runs
    out = [obs]
    rewards = []
    for _ in range(steps):
        obs, r, term, trunc, _ = env.step(rng.uniform(-1, 1, 5).astype(np.float32))
        out.append(obs)
        rewards.append(r)
    env.close()
    return out, rewards


def test_same_seed_same_everything(tabletop_id):
    a, ra = _rollout(tabletop_id, 7, image_size=64)
    b, rb = _rollout(tabletop_id, 7, image_size=64)
    for oa, ob in zip(a, b):
        assert oa["instruction"] == ob["instruction"]
        assert oa["rgb"].tobytes() == ob["rgb"].tobytes()
        np.testing.assert_array_equal(oa["proprio"], ob["proprio"])
    assert ra == rb


def test_reset_history_does_not_leak():
    """An env reset to seed s gives the same images whatever episodes it ran before."""
    env = gym.make("vlagym/TabletopTouch-v0", image_size=64)
    fresh = env.reset(seed=5)[0]["rgb"]
    env.reset(seed=9)
    for _ in range(5):
        env.step(env.action_space.sample())
    again = env.reset(seed=5)[0]["rgb"]
    assert fresh.tobytes() == again.tobytes()


def test_different_seeds_differ(tabletop_id):
    env = gym.make(tabletop_id, image_size=64)
    scenes = set()
    for seed in range(4):
        obs, info = env.reset(seed=seed)
        scenes.add((obs["instruction"], obs["rgb"].tobytes()))
    assert len(scenes) == 4


def test_instruction_names_unique_object(tabletop_id):
    env = gym.make(tabletop_id, obs_mode="state")
    for seed in range(20):
        env.reset(seed=seed)
        objects = env.unwrapped.task.objects
        pairs = [(o.color, o.shape) for o in objects]
        assert len(pairs) == len(set(pairs)), pairs
        first = objects[0]
        assert f"{first.color} {first.shape}" in env.unwrapped.task.instruction


def test_wrist_camera_and_sizes():
    env = gym.make("vlagym/TabletopTouch-v0", image_size=(48, 64), wrist_camera=True)
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (48, 64, 3) and obs["rgb_wrist"].shape == (48, 64, 3)
    assert env.observation_space.contains(obs)
    assert obs["rgb_wrist"].std() > 0  # renders something, not a blank frame


def test_state_mode_has_no_images():
    env = gym.make("vlagym/TabletopTouch-v0", obs_mode="state")
    obs, _ = env.reset(seed=0)
    assert "rgb" not in obs and obs["state"].shape == env.observation_space["state"].shape
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize("bad, match", [
    (np.zeros(4, np.float32), "shape"),
    (np.zeros((1, 5), np.float32), "shape"),
    (np.array([0, 0, np.nan, 0, 0], np.float32), "NaN"),
])
def test_bad_actions_raise(bad, match):
    env = gym.make("vlagym/TabletopTouch-v0", obs_mode="state")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(bad)


def test_unknown_ids_and_options_raise():
    with pytest.raises(gym.error.Error, match="TabletopFly"):
        gym.make("vlagym/TabletopFly-v0")
    with pytest.raises(ValueError, match="unknown tabletop task 'fly'"):
        vlagym.envs.tabletop.env.TabletopEnv(task="fly")
    with pytest.raises(ValueError, match="obs_mode"):
        gym.make("vlagym/TabletopTouch-v0", obs_mode="depth")
    with pytest.raises(ValueError, match="unknown environment id"):
        vlagym.envs.check_env_id("vlagym/Nope-v0")


def test_lighting_changes_image_not_state():
    a = gym.make("vlagym/TabletopTouch-v0", image_size=64)
    b = gym.make("vlagym/TabletopTouch-v0", image_size=64,
                 lighting={"direction": (-1.0, 0.5, 0.6), "color": (1.0, 0.8, 0.6), "diffuse": 0.8})
    oa, _ = a.reset(seed=3)
    ob, _ = b.reset(seed=3)
    assert oa["instruction"] == ob["instruction"]
    np.testing.assert_array_equal(oa["proprio"], ob["proprio"])
    assert oa["rgb"].tobytes() != ob["rgb"].tobytes()


def test_async_vector_env():
    # Gymnasium's shared-memory path snapshots Text observations once (they read back as "aaaa...");
    # shared_memory=False sends real instructions, as the README says.
    envs = gym.vector.AsyncVectorEnv([lambda: gym.make("vlagym/TabletopTouch-v0", image_size=32)] * 2,
                                     shared_memory=False)
    try:
        obs, infos = envs.reset(seed=[0, 1])
        assert obs["rgb"].shape == (2, 32, 32, 3)
        single = gym.make("vlagym/TabletopTouch-v0", image_size=32)
        assert list(obs["instruction"]) == [single.reset(seed=s)[0]["instruction"] for s in (0, 1)]
        obs, rew, term, trunc, infos = envs.step(np.zeros((2, 5), np.float32))
        assert rew.shape == (2,)
    finally:
        envs.close()


def test_touch_dense_reward_and_expert_noise_recorded():
    env = gym.make("vlagym/TabletopTouch-v0", obs_mode="state", reward_type="dense")
    obs, info = env.reset(seed=2)
    clean = env.unwrapped.task.expert()
    noisy = env.unwrapped.task.expert(noise=0.3, seed=0)
    a_clean, a_noisy = clean.act(obs, info), noisy.act(obs, info)
    assert a_clean.shape == a_noisy.shape == (5,)
    assert not np.allclose(a_clean[:4], a_noisy[:4])  # noise is in the executed action
    assert a_clean[4] == a_noisy[4]  # the gripper bit stays clean
    _, r, *_ = env.step(a_clean)
    assert r < 0  # dense: minus the distance until touching
