"""Tiny policy configs and synthetic batches shared by the policy tests and the regression-artifact script."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from vlagym.policies import config_class, make_policy, policy_names
from vlagym.policies.clip.configuration_clip import TEST_TOWERS

SIZE = 64
ACTION_DIM, PROPRIO_DIM = 5, 6
INSTRUCTIONS = ["touch the red cube", "touch the blue bowl"]

# Every registered policy's test sizes, declared beside it (``PolicyConfig.tiny_variants``): "<name>" or
# "<name>-<suffix>" -> config overrides. A policy folder added to vlagym/policies is tested from here on.
TINY = {
    (name if not suffix else f"{name}-{suffix}"): overrides
    for name in policy_names()
    for suffix, overrides in config_class(name).tiny_variants().items()
}
VARIANTS = list(TINY)
BASE_VARIANTS = {name: next(v for v in TINY if v.split("-")[0] == name) for name in policy_names()
                 if config_class(name).tiny_variants()}
"""Each policy's first tiny variant, for tests that build every policy once."""
TINY_CLIP_CFG = TEST_TOWERS


def spaces_for(size: int = SIZE) -> tuple[spaces.Dict, spaces.Box]:
    """The tabletop env's spaces at ``size`` (built directly so the tests need no simulator)."""
    obs = spaces.Dict(
        {
            "rgb": spaces.Box(0, 255, (size, size, 3), np.uint8),
            "rgb_wrist": spaces.Box(0, 255, (size, size, 3), np.uint8),
            "instruction": spaces.Text(160),
            "proprio": spaces.Box(-2.0, 2.0, (PROPRIO_DIM,), np.float32),
        }
    )
    return obs, spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


STATS = {
    "actions": {
        "mean": [0.1, -0.1, 0.0, 0.0, 0.0],
        "std": [0.5, 0.5, 0.4, 0.2, 1.0],
        "min": [-1.0, -1.0, -1.0, -0.5, -1.0],
        "max": [1.0, 1.0, 1.0, 0.5, 1.0],
    },
    "proprio": {"mean": [0.45, 0.0, 0.2, 0.0, 1.0, 0.04], "std": [0.1, 0.2, 0.1, 0.5, 0.5, 0.02]},
}


def tiny_policy(variant: str, seed: int = 0, **overrides):
    name = variant.split("-")[0]
    torch.manual_seed(seed)
    obs_space, act_space = spaces_for()
    return make_policy(name, obs_space, act_space, stats=STATS, **{**TINY[variant], **overrides})


def synthetic_batch(config, batch_size: int = 4, seed: int = 0) -> dict:
    """A DemoWindows-shaped batch: smooth images (learnable), actions tied to the instruction."""
    g = torch.Generator().manual_seed(seed)
    b, t, h = batch_size, config.history, config.horizon
    base = torch.rand(b, 1, 3, 8, 8, generator=g)
    images = torch.nn.functional.interpolate(base.flatten(0, 1), size=config.image_size, mode="bilinear")
    images = (
        (images.unflatten(0, (b, 1)).expand(b, t, 3, *config.image_size) * 255).to(torch.uint8).contiguous()
    )
    actions = torch.rand(b, h, ACTION_DIM, generator=g) * 1.6 - 0.8
    actions[..., 4] = torch.where(torch.arange(b)[:, None] % 2 == 0, 1.0, -1.0)
    obs_mask = torch.ones(b, t, dtype=torch.bool)
    obs_mask[0, : t - 1] = False  # the first sample starts an episode: padded history
    action_mask = torch.ones(b, h, dtype=torch.bool)
    action_mask[-1, h // 2 + 1 :] = False  # the last one ends it: padded actions
    return {
        "rgb": images,
        "rgb_wrist": images.flip(-1).contiguous(),  # a second camera for multi-camera variants
        "obs_mask": obs_mask,
        "proprio": torch.randn(b, t, PROPRIO_DIM, generator=g) * 0.1,
        "actions": actions,
        "action_mask": action_mask,
        "instruction": [INSTRUCTIONS[i % 2] for i in range(b)],
    }


def observation(seed: int = 0, size: int = SIZE, instruction: str = INSTRUCTIONS[0]) -> dict:
    rng = np.random.default_rng(seed)
    obs = {
        "rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "instruction": instruction,
        "proprio": rng.normal(size=PROPRIO_DIM).astype(np.float32) * 0.1,
    }
    obs["rgb_wrist"] = obs["rgb"][:, ::-1].copy()
    return obs
