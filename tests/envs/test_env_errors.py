"""Constructor arguments and actions a user gets wrong fail at once, naming the argument and the bound."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

TOUCH, PICK, PLACE, NAV = ("vlagym/TabletopTouch-v0", "vlagym/TabletopPickUp-v0", "vlagym/TabletopPlace-v0",
                           "vlagym/NavObjectGoal-v0")


@pytest.mark.parametrize("env_id", [PICK, NAV])
@pytest.mark.parametrize("size, match", [(64.5, "int or a .height, width. pair of ints, got 64.5"),
                                         (True, "got True"), ("64", "got '64'"),
                                         (10000, "within 16..512 pixels, got 10000"), (8, "within 16..512"),
                                         ((64, 1024), "within 16..512")])
def test_image_size_is_an_int_within_the_documented_range(env_id, size, match):
    with pytest.raises(ValueError, match=f"image_size must be .*{match}"):
        gym.make(env_id, image_size=size)
    assert gym.make(env_id, image_size=(16, 512)).observation_space["rgb"].shape == (16, 512, 3)


@pytest.mark.parametrize("env_id, level, cap", [(PICK, None, 4), (PLACE, None, 3), (TOUCH, "L5", 3)])
def test_num_distractors_above_the_cap_is_refused_naming_it(env_id, level, cap):
    with pytest.raises(ValueError, match=f"num_distractors .* exceeds the cap of {cap}"):
        gym.make(env_id, obs_mode="state", level=level, num_distractors=(0, cap + 1))
    env = gym.make(env_id, obs_mode="state", level=level, num_distractors=cap)
    env.reset(seed=0)
    assert len(env.unwrapped.task.objects) == 5  # the cap is what fits, not less


@pytest.mark.parametrize("action", ["1", True, np.bool_(True), 1.0, np.float32(1), np.array(1.0), None])
def test_discrete_navigation_refuses_non_integer_actions(action):
    env = gym.make(NAV, obs_mode="state")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="discrete action must be an integer in 0..3"):
        env.step(action)


def test_discrete_navigation_takes_numpy_integers():
    env = gym.make(NAV, obs_mode="state")
    env.reset(seed=0)
    for action in (1, np.int64(1), np.int32(2), np.array(3), np.uint8(1)):
        env.step(action)


def test_step_after_termination_raises():
    env = gym.make(NAV, obs_mode="state")
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(0)  # stop ends a discrete episode
    assert terminated
    with pytest.raises(RuntimeError, match="after the episode was terminated.*call reset"):
        env.step(1)
    env.reset(seed=1)
    env.step(1)  # reset clears it
    bare = env.unwrapped  # without the registered wrappers too
    bare.reset(seed=0)
    bare.step(0)
    with pytest.raises(RuntimeError, match="NavEnv: step.. called after the episode was terminated"):
        bare.step(1)


def test_step_after_truncation_raises():
    env = gym.make(TOUCH, obs_mode="state", max_episode_steps=2)
    env.reset(seed=0)
    zero = np.zeros(5, np.float32)
    env.step(zero)
    assert env.step(zero)[3]  # truncated
    with pytest.raises(RuntimeError, match="after the episode was truncated"):
        env.step(zero)


def test_vector_env_autoreset_still_steps_past_episode_ends():
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(NAV, obs_mode="state")] * 2)
    envs.reset(seed=[0, 1])
    for _ in range(3):  # stop, then the autoreset step, then stop again
        envs.step(np.zeros(2, np.int64))


def test_tabletop_out_of_range_action_warns_once_and_is_clipped():
    env = gym.make(TOUCH, obs_mode="state")
    env.reset(seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.step(np.zeros(5, np.float32))
        env.step(np.full(5, 3.0, np.float32))
        env.step(np.full(5, -3.0, np.float32))
    clipped = [w for w in caught if "outside the action space" in str(w.message)]
    assert len(clipped) == 1 and "clipped" in str(clipped[0].message)
    assert "clipped" in env.unwrapped.__doc__ and "warning" in type(env.unwrapped).__doc__.lower()
