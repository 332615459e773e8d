"""Discrete (Habitat-style stop/forward/left/right) actions: RT-1, BC-Z and CLIP fusion with a categorical head.

Shapes and types, learning on a tiny overfit, save/load, class indices never normalised, and acting on
``vlagym/NavObjectGoal-v0`` in its discrete mode.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).parent))
from policy_helpers import (  # noqa: E402
    BASE_VARIANTS,
    PROPRIO_DIM,
    SIZE,
    TINY,
    TINY_CLIP_CFG,
    observation,
    synthetic_batch,
)

from vlagym.policies import load_policy, make_policy  # noqa: E402
from vlagym.policies.bcz import BCZConfig  # noqa: E402
from vlagym.policies.normalize import ActionCodec  # noqa: E402
from vlagym.testing import overfit_losses  # noqa: E402

torch.set_num_threads(1)

N = 4  # stop, forward, left, right
# Every registered policy once, and the variants whose discrete heads differ (frame stack, fusion heads).
VARIANTS = {
    **{variant: TINY[variant] for variant in BASE_VARIANTS.values()},
    "bcz-history": {**TINY["bcz"], "history": 3},
    "clip-late": TINY["clip-late"],
    "clip-cross": TINY["clip-cross"],
}
# A navigation dataset's statistics of its integer actions: mean and std must not touch the labels.
NAV_STATS = {"actions": {"mean": [1.94], "std": [0.98], "min": [0.0], "max": [3.0]},
             "proprio": {"mean": [0.0] * PROPRIO_DIM, "std": [1.0] * PROPRIO_DIM}}


def nav_spaces(size: int = SIZE, n: int = N, start: int = 0) -> tuple[spaces.Dict, spaces.Discrete]:
    obs = spaces.Dict({"rgb": spaces.Box(0, 255, (size, size, 3), np.uint8), "instruction": spaces.Text(160),
                       "proprio": spaces.Box(-50.0, 50.0, (PROPRIO_DIM,), np.float32)})
    return obs, spaces.Discrete(n, start=start)


def discrete_policy(variant: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return make_policy(variant.split("-")[0], *nav_spaces(), stats=NAV_STATS, **{**VARIANTS[variant], **overrides})


def discrete_batch(config, batch_size: int = 4, seed: int = 0) -> dict:
    """``synthetic_batch`` with DemoWindows' discrete actions: one float class label per step, ``(B, horizon)``."""
    batch = synthetic_batch(config, batch_size, seed)
    g = torch.Generator().manual_seed(seed + 1)
    batch["actions"] = torch.randint(0, N, (batch_size, config.horizon), generator=g).float()
    return batch


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_integer_actions(variant):
    policy = discrete_policy(variant)
    cfg = policy.config
    assert (cfg.action_classes, cfg.action_dim, cfg.gripper_dims) == (N, 1, ())
    assert (cfg.action_low, cfg.action_high) == ((0.0,), (N - 1.0,))
    batch = discrete_batch(cfg)
    loss, logs = policy.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    assert logs["loss"] == pytest.approx(float(loss.detach()))
    policy.eval()
    pred = policy.predict(batch)
    assert pred.shape == (4, cfg.horizon, 1) and pred.dtype == torch.float32
    assert set(pred.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    for step in range(3):
        action = policy.act(observation(step))
        assert type(action) is int and 0 <= action < N


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_falls_when_overfitting(variant):
    policy = discrete_policy(variant)
    losses = overfit_losses(policy, discrete_batch(policy.config))
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("variant", ["rt1", "bcz-history", "clip-late"])
def test_save_load_keeps_actions_identical(variant, tmp_path):
    policy = discrete_policy(variant)
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    policy.loss(discrete_batch(policy.config))[0].backward()
    opt.step()
    policy.eval().save_pretrained(tmp_path)
    loaded = load_policy(tmp_path)
    assert loaded.config == policy.config and loaded.config.action_classes == N
    acts = [(policy.act(observation(s)), loaded.act(observation(s))) for s in range(5)]
    assert all(a == b for a, b in acts), acts
    torch.testing.assert_close(loaded.predict(discrete_batch(policy.config)),
                               policy.predict(discrete_batch(policy.config)))


def test_class_indices_are_never_normalised():
    codec = ActionCodec(NAV_STATS["actions"], [0.0], [3.0], num_classes=N)
    actions = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    assert codec.class_targets(actions).tolist() == [0, 1, 2, 3]
    assert codec.from_classes(torch.arange(N)).squeeze(-1).tolist() == [0.0, 1.0, 2.0, 3.0]
    for bad in (4.0, -1.0, 0.5):
        with pytest.raises(ValueError, match="not one of the 4 discrete actions"):
            codec.class_targets(torch.tensor([[bad]]))
    policy = discrete_policy("bcz")
    batch = discrete_batch(policy.config)
    batch["actions"][0, 0] = 0.3  # a continuous dataset fed to a discrete policy
    with pytest.raises(ValueError, match="discrete action mode"):
        policy.loss(batch)


def test_factory_takes_discrete_spaces_with_a_start():
    obs_space, act_space = nav_spaces(n=3, start=-1)
    policy = make_policy("bcz", obs_space, act_space, text_encoder="hash", hidden_dim=16, horizon=2).eval()
    assert (policy.config.action_low, policy.config.action_high, policy.config.action_classes) == ((-1.0,), (1.0,), 3)
    assert all(-1 <= policy.act(observation(s)) <= 1 for s in range(3))
    with pytest.raises(ValueError, match="action_classes must be 0 .* or n >= 2"):
        BCZConfig(action_classes=1, action_dim=1, gripper_dims=())
    with pytest.raises(ValueError, match="action_dim must be 1 with discrete actions"):
        BCZConfig(action_classes=4, gripper_dims=())
    with pytest.raises(ValueError, match="gripper_dims must be \\(\\) with discrete actions"):
        BCZConfig(action_classes=4, action_dim=1, gripper_dims=(0,))
    with pytest.raises(ValueError, match="action_high must be action_low \\+ 3"):
        BCZConfig(action_classes=4, action_dim=1, gripper_dims=(), action_low=(0.0,), action_high=(5.0,))
    cfg = BCZConfig(action_classes=4, action_dim=1, gripper_dims=())
    assert (cfg.action_low, cfg.action_high) == ((0.0,), (3.0,)) and BCZConfig.from_dict(cfg.to_dict()) == cfg


def test_continuous_configs_saved_before_discrete_actions_still_load():
    cfg = BCZConfig().to_dict()
    del cfg["action_classes"]
    assert BCZConfig.from_dict(cfg).action_classes == 0


@pytest.mark.parametrize("variant", ["rt1", "bcz-history", "clip-late"])
def test_acts_on_the_discrete_navigation_env(variant):
    import gymnasium as gym

    size = 32
    env = gym.make("vlagym/NavObjectGoal-v0", image_size=size, action_mode="discrete")
    clip_cfg = {**TINY_CLIP_CFG, "vision_cfg": {**TINY_CLIP_CFG["vision_cfg"], "image_size": size}}
    kw = {**VARIANTS[variant], **({"clip_model_cfg": clip_cfg} if variant.startswith("clip") else {})}
    policy = make_policy(variant.split("-")[0], env.observation_space, env.action_space, stats=NAV_STATS,
                         **kw).eval()
    obs, _ = env.reset(seed=0)
    policy.reset()
    for _ in range(6):
        action = policy.act(obs)
        assert env.action_space.contains(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset(seed=1)
            policy.reset()
    env.close()


def test_trains_on_a_collected_discrete_dataset(tmp_path):
    """Collect discrete NavObjectGoal demos, train BC-Z with a frame stack (and grounding heads on the goal's
    privileged labels) a few steps, act and locate with the result."""
    import gymnasium as gym

    from vlagym.agents.collect import CollectConfig, collect
    from vlagym.dataio.windows import DemoWindows
    from vlagym.policies.train import TrainConfig, train

    data = tmp_path / "nav"
    collect(CollectConfig(env="vlagym/NavObjectGoal-v0", episodes=2, out=str(data), workers=1,
                          env_kwargs={"image_size": 32}))
    ds = DemoWindows(data, history=2, horizon=3)
    item = ds[0]
    assert item["actions"].shape == (3,) and float(item["actions"][0]).is_integer()
    stats = json.loads((data / "stats.json").read_text())
    assert isinstance(stats["actions"]["mean"], float)  # one number per step, not a vector
    cfg = TrainConfig(data=[str(data)], policy="bcz", out=str(tmp_path / "run"), steps=3, batch_size=4,
                      num_workers=0, eval_every=0, save_every=3, log_every=1, warmup_steps=1, threads=1,
                      policy_overrides={"text_encoder": "hash", "text_dim": 16, "hidden_dim": 32, "horizon": 3,
                                        "history": 2, "backbone_width": 8, "heatmap_weight": 1.0,
                                        "position_weight": 1.0})
    summary = train(cfg, progress=False)
    assert summary["final_loss"] is not None and np.isfinite(summary["final_loss"])
    policy = load_policy(summary["best_policy"])
    assert policy.config.action_classes == 4 and policy.config.history == 2 and policy.config.roles == ("goal",)
    env = gym.make("vlagym/NavObjectGoal-v0", image_size=32)
    obs, _ = env.reset(seed=5)
    assert env.action_space.contains(policy.act(obs))
    assert policy.locate(obs)["position"].shape == (1, 3)
    env.close()


def test_rl_fine_tuning_refuses_a_discrete_bcz():
    from vlagym.policies.rl import init_actor_from_bcz

    with pytest.raises(ValueError, match="4 discrete actions"):
        init_actor_from_bcz(None, discrete_policy("bcz"))
