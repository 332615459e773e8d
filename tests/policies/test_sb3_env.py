"""SB3Wrapper: every registered id passes stable-baselines3's check_env; observations convert faithfully."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

import vlagym
from vlagym.policies.language import HashTextEncoder, make_text_encoder
from vlagym.policies.sb3_env import InstructionEncoder, SB3Wrapper, make_sb3_env

TOKENS = {"kind": "tokens"}


def _check_without_warnings(env: gym.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    sb3 = [str(w.message) for w in caught if "stable_baselines3" in w.filename]
    assert not sb3, sb3


@pytest.mark.parametrize("env_id", vlagym.ENV_IDS)
def test_every_id_passes_sb3_check_env(env_id):
    env = make_sb3_env(env_id, TOKENS, image_size=40)
    try:
        _check_without_warnings(env)
        assert env.observation_space["rgb"].shape == (3, 40, 40)
        assert env.observation_space["rgb"].dtype == np.uint8
    finally:
        env.close()


@pytest.mark.parametrize("kwargs", [{"obs_mode": "state", "reward_type": "dense"},
                                    {"action_mode": "continuous", "top_down_map": True, "image_size": 40}])
def test_state_and_continuous_navigation_pass_check_env(kwargs):
    env = make_sb3_env("vlagym/NavObjectGoal-v0", TOKENS, **kwargs)
    try:
        _check_without_warnings(env)
    finally:
        env.close()


def test_sentence_embedding_is_the_language_encoders_and_passes_check_env():
    env = make_sb3_env("vlagym/TabletopTouch-v0", {"kind": "sentence"}, obs_mode="state")
    try:
        _check_without_warnings(env)
        obs, _ = env.reset(seed=3)
        text = env.unwrapped.task.instruction
        want = make_text_encoder("sentence")([text])[0].numpy()
        assert obs["instruction"].shape == (384,) and obs["instruction"].dtype == np.float32
        np.testing.assert_allclose(obs["instruction"], want, atol=1e-6)
        assert env.observation_space["instruction"].contains(obs["instruction"])
    finally:
        env.close()


def test_images_are_channel_first_copies_and_tokens_match_the_hash_encoder():
    raw = gym.make("vlagym/TabletopTouch-v0", image_size=40)
    env = SB3Wrapper(gym.make("vlagym/TabletopTouch-v0", image_size=40), InstructionEncoder("tokens", max_tokens=12))
    try:
        want, _ = raw.reset(seed=5)
        got, _ = env.reset(seed=5)
        np.testing.assert_array_equal(got["rgb"], want["rgb"].transpose(2, 0, 1))
        np.testing.assert_array_equal(got["proprio"], want["proprio"])
        ids = HashTextEncoder(buckets=4096)._ids(want["instruction"])
        assert got["instruction"].tolist() == ids + [4096] * (12 - len(ids))
    finally:
        raw.close()
        env.close()


def test_bad_instruction_settings_are_named():
    with pytest.raises(ValueError, match="kind must be one of"):
        InstructionEncoder("bert")
    with pytest.raises(ValueError, match="no fields"):
        InstructionEncoder.from_dict({"kind": "tokens", "vocab": 3})
    with pytest.raises(ValueError, match="unknown environment id"):
        make_sb3_env("vlagym/Nope-v0", TOKENS)


def test_encoder_is_cached_per_string_and_returns_copies():
    from vlagym.policies import sb3_env as wrappers

    enc = InstructionEncoder("tokens", buckets=97)
    a = enc("touch the red cube")
    a[:] = 0
    np.testing.assert_array_equal(enc("touch the red cube")[:4], HashTextEncoder(buckets=97)._ids("touch the red cube"))
    assert (enc, "touch the red cube") in wrappers._VECTORS
