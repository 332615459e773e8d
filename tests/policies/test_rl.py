"""The SB3 features extractor and BC-Z initialisation of PPO's actor."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import MultiInputActorCriticPolicy

from vlagym.envs.wrappers import InstructionEncoder, SB3ObsTransform, sb3_observation
from vlagym.policies.rl import BCZFeaturesExtractor, VLAFeaturesExtractor, init_actor_from_bcz

from .policy_helpers import INSTRUCTIONS, observation, spaces_for, tiny_policy

TOKENS = InstructionEncoder("tokens")


def _space(instruction=TOKENS, size=64):
    obs_space, _ = spaces_for(size)
    one_camera = spaces.Dict({k: v for k, v in obs_space.spaces.items() if k != "rgb_wrist"})
    return SB3ObsTransform(one_camera, instruction).observation_space


def _batch(space, instructions, seed=0):
    obs = [sb3_observation(observation(seed + i, instruction=t), space, TOKENS) for i, t in enumerate(instructions)]
    return {k: torch.as_tensor(np.stack([o[k] for o in obs])) for k in space.spaces}


def test_pixel_features_are_film_conditioned_on_the_instruction():
    torch.manual_seed(0)
    space = _space()
    ext = VLAFeaturesExtractor(space, image_features=32, token_dim=16)
    assert ext.features_dim == 32 + 6 + 16
    for film in ext.encoders["rgb"].films:  # FiLM starts as the identity; give it something to do
        torch.nn.init.normal_(film.proj.weight, std=0.5)
    same_image = _batch(space, INSTRUCTIONS)
    for k in ("rgb", "proprio"):
        same_image[k] = same_image[k][:1].expand_as(same_image[k]).clone()
    feats = ext(same_image)
    assert feats.shape == (2, ext.features_dim)
    assert not torch.allclose(feats[0, :32], feats[1, :32]), "image features ignore the instruction"
    feats.sum().backward()
    assert ext.text.table.weight.grad.abs().sum() > 0


def test_state_features_concatenate_state_proprio_and_embedding():
    state_space = gym.spaces.Dict({"state": gym.spaces.Box(-100, 100, (30,), np.float32),
                                   "instruction": gym.spaces.Box(-1, 1, (384,), np.float32),
                                   "proprio": gym.spaces.Box(-2, 2, (6,), np.float32)})
    ext = VLAFeaturesExtractor(state_space)
    obs = {k: torch.as_tensor(np.stack([s.sample() for _ in range(3)])) for k, s in state_space.spaces.items()}
    feats = ext(obs)
    assert feats.shape == (3, 30 + 6 + 384)
    torch.testing.assert_close(feats[:, -384:], obs["instruction"])


def test_extractor_names_bad_spaces():
    with pytest.raises(ValueError, match="'instruction'"):
        VLAFeaturesExtractor(gym.spaces.Dict({"proprio": gym.spaces.Box(-1, 1, (3,))}))
    with pytest.raises(ValueError, match="unknown image_backbone"):
        VLAFeaturesExtractor(_space(), image_backbone="vit")


def _bcz_actor(bcz, space):
    policy = MultiInputActorCriticPolicy(
        space, gym.spaces.Box(-1, 1, (5,), np.float32), lambda _: 1e-4,
        features_extractor_class=BCZFeaturesExtractor,
        features_extractor_kwargs={"bcz_config": bcz.config.to_dict()},
        share_features_extractor=False, normalize_images=False, net_arch=dict(pi=[], vf=[16]))
    init_actor_from_bcz(policy, bcz, log_std=-2.0)
    return policy


def test_bcz_initialised_actor_acts_as_the_bc_policy():
    bcz = tiny_policy("bcz").eval()
    for p in (bcz.continuous_head, bcz.gripper_head):  # make the heads' outputs large enough to compare
        torch.nn.init.normal_(p.weight, std=0.5)
    space = _space()
    policy = _bcz_actor(bcz, space)
    policy.set_training_mode(True)  # BatchNorm must still use BC-Z's statistics
    for seed in range(4):
        raw = observation(seed, instruction=INSTRUCTIONS[seed % 2])
        bcz.reset()
        want = bcz.act(raw)
        got, _ = policy.predict(sb3_observation(raw, space, TOKENS), deterministic=True)
        np.testing.assert_allclose(got[:4], np.clip(want[:4], -1, 1), atol=1e-4)
        assert np.sign(got[4]) == np.sign(want[4]), (got, want)  # the env closes the gripper at >= 0
    assert torch.allclose(policy.log_std, torch.full((5,), -2.0))


def test_bcz_init_checks_the_instruction_kind():
    bcz = tiny_policy("bcz")
    space = _space()
    space.spaces["instruction"] = gym.spaces.Box(-1, 1, (32,), np.float32)  # an embedding, not token ids
    with pytest.raises(ValueError, match="needs token instructions"):
        BCZFeaturesExtractor(space, bcz.config.to_dict())
