"""RT-1, BC-Z and CLIP fusion: shapes, learning, save/load, input errors, RT-1's token cache."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).parent))
from policy_helpers import (  # noqa: E402
    ACTION_DIM,
    BASE_VARIANTS,
    INSTRUCTIONS,
    SIZE,
    STATS,
    TINY,
    VARIANTS,
    observation,
    spaces_for,
    synthetic_batch,
    tiny_policy,
)

from vlagym.policies import config_class, load_policy, make_policy, policy_names  # noqa: E402
from vlagym.policies.bcz import BCZConfig  # noqa: E402
from vlagym.policies.clip import CLIPConfig  # noqa: E402
from vlagym.policies.rt1 import RT1Config, RT1Policy  # noqa: E402
from vlagym.testing import overfit_losses  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_dtypes_and_bounds(variant):
    policy = tiny_policy(variant)
    cfg = policy.config
    batch = synthetic_batch(cfg)
    loss, logs = policy.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    assert isinstance(logs["loss"], float) and logs["loss"] == pytest.approx(float(loss.detach()))
    policy.eval()
    pred = policy.predict(batch)
    assert pred.shape == (4, cfg.horizon, ACTION_DIM) and pred.dtype == torch.float32
    assert (pred >= -1).all() and (pred <= 1).all()
    assert set(pred[..., 4].unique().tolist()) <= {-1.0, 1.0} or variant.startswith("rt1")
    for step in range(3):
        action = policy.act(observation(step))
        assert action.shape == (ACTION_DIM,) and action.dtype == np.float32
        assert np.all(action >= -1) and np.all(action <= 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_decreases_when_overfitting(variant):
    policy = tiny_policy(variant)
    losses = overfit_losses(policy, synthetic_batch(policy.config))
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_load_gives_identical_actions(variant, tmp_path):
    policy = tiny_policy(variant)
    # Train a step so that no weight is still at its initial value (FiLM starts at zero).
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    policy.loss(synthetic_batch(policy.config))[0].backward()
    opt.step()
    policy.eval().save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_policy(tmp_path)
    assert type(loaded) is type(policy) and loaded.config == policy.config
    assert loaded.config.stats == policy.config.stats
    for step in range(4):
        obs = observation(step)
        np.testing.assert_array_equal(policy.act(obs), loaded.act(obs))
    with pytest.raises(ValueError, match="not 'bcz'|not 'rt1'"):
        (RT1Policy if policy.name != "rt1" else type(tiny_policy("bcz"))).from_pretrained(tmp_path)


@pytest.mark.parametrize("name", policy_names())
def test_default_configs_build_for_the_env_image_size(name):
    obs_space, act_space = spaces_for(SIZE)
    # Hashed words: the default sentence encoder's weights are a test of their own (test_language.py).
    kw = {"text_encoder": "hash"} if "text_encoder" in {f.name for f in dataclasses.fields(config_class(name))} else {}
    policy = make_policy(name, obs_space, act_space, stats=STATS, **kw).eval()
    assert policy.config.image_size == (SIZE, SIZE)
    assert policy.act(observation()).shape == (ACTION_DIM,)


def test_loaded_policy_acts_in_env_units_from_saved_stats(tmp_path):
    """Statistics live in config.json: the same weights under other statistics act differently."""
    policy = tiny_policy("bcz").eval()
    policy.save_pretrained(tmp_path)
    loaded = load_policy(tmp_path)
    np.testing.assert_allclose(loaded.codec.mean.numpy(), STATS["actions"]["mean"])
    np.testing.assert_allclose(loaded.proprio_norm.std.numpy(), STATS["proprio"]["std"], rtol=1e-6)


def test_missing_key_and_wrong_image_size_errors():
    policy = tiny_policy("bcz").eval()
    obs = observation()
    del obs["proprio"]
    with pytest.raises(KeyError, match="proprio"):
        policy.act(obs)
    with pytest.raises(ValueError, match=r"\(32, 32, 3\), expected \(64, 64, 3\)"):
        policy.act(observation(size=32))
    bad = observation()
    bad["rgb"] = bad["rgb"].astype(np.float32)
    with pytest.raises(ValueError, match="uint8"):
        policy.act(bad)
    batch = synthetic_batch(policy.config)
    batch["rgb"] = batch["rgb"][..., :32, :32]
    with pytest.raises(ValueError, match="expected"):
        policy.loss(batch)
    rt1 = tiny_policy("rt1")
    batch = synthetic_batch(rt1.config)
    batch["rgb"] = batch["rgb"][:, :2]
    with pytest.raises(ValueError, match="history=3"):
        rt1.loss(batch)


def test_rt1_token_cache_matches_recomputing_the_history():
    policy = tiny_policy("rt1").eval()
    t = policy.config.history
    frames = [observation(i) for i in range(t + 3)]
    logits_seen = []
    decode = policy.decode
    policy.decode = lambda logits: logits_seen.append(logits) or decode(logits)
    calls = []
    policy.backbone.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    acted = [policy.act(f) for f in frames]
    assert calls == [1] * len(frames)  # one new image encoded per act
    for step in range(len(frames)):
        # The window DemoWindows would give at this step: the first frame repeats over the padding.
        idx = [max(0, i) for i in range(step - t + 1, step + 1)]
        batch = {
            "rgb": torch.stack([torch.from_numpy(frames[i]["rgb"]).permute(2, 0, 1) for i in idx])[None],
            "obs_mask": torch.tensor([i >= 0 for i in range(step - t + 1, step + 1)])[None],
            "proprio": torch.zeros(1, t, 6),
            "instruction": [frames[0]["instruction"]],
        }
        full = policy._window_logits(batch)
        torch.testing.assert_close(logits_seen[step], full, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(acted[step], policy.decode(full)[0].numpy(), atol=1e-6)


def test_rt1_new_instruction_or_reset_starts_a_new_history():
    policy = tiny_policy("rt1").eval()
    for i in range(4):
        policy.act(observation(i))
    assert len(policy._tokens) == 3
    policy.act(observation(9, instruction=INSTRUCTIONS[1]))
    assert len(policy._tokens) == 1
    policy.reset()
    assert len(policy._tokens) == 0 and policy._cond is None


def test_rt1_bins_round_trip():
    policy = tiny_policy("rt1")
    actions = torch.tensor([[-1.0, 1.0, 0.0, 0.5, -1.0], [0.3, -0.2, 0.99, -0.5, 1.0]])
    bins = policy.codec.to_bins(actions, 256)
    assert bins.min() >= 0 and bins.max() <= 255 and bins[0, 0] == 0 and bins[0, 1] == 255
    back = policy.codec.from_bins(bins, 256)
    width = (policy.codec.amax - policy.codec.amin) / 255
    assert ((back - actions).abs() <= width / 2 + 1e-6).all()


def test_bcz_executes_a_configurable_chunk():
    policy = tiny_policy("bcz", n_action_steps=3).eval()
    calls = []
    policy.backbone.register_forward_hook(lambda *a: calls.append(1))
    acts = [policy.act(observation(i)) for i in range(7)]
    assert len(calls) == 3  # predictions at steps 0, 3 and 6
    chunk = policy.predict(
        {
            "rgb": torch.from_numpy(observation(0)["rgb"]).permute(2, 0, 1)[None, None],
            "proprio": torch.from_numpy(observation(0)["proprio"])[None, None],
            "instruction": [INSTRUCTIONS[0]],
        }
    )[0]
    np.testing.assert_allclose(np.stack(acts[:3]), chunk[:3].numpy(), atol=1e-5)


def test_make_policy_from_a_real_env_and_a_dataset(tmp_path):
    import gymnasium as gym
    from torch.utils.data import DataLoader

    from vlagym.agents.collect import CollectConfig, collect
    from vlagym.dataio.windows import DemoWindows

    out = tmp_path / "ds"
    collect(
        CollectConfig(
            env="vlagym/TabletopTouch-v0",
            episodes=2,
            out=str(out),
            workers=1,
            env_kwargs={"image_size": SIZE},
        )
    )
    env = gym.make("vlagym/TabletopTouch-v0", image_size=SIZE)
    obs, _ = env.reset(seed=0)
    import json

    stats = json.loads((out / "stats.json").read_text())
    policy = make_policy(
        "bcz", env.observation_space, env.action_space, stats=stats, text_encoder="hash", hidden_dim=32
    )
    assert policy.config.image_size == (SIZE, SIZE) and policy.config.stats["actions"][
        "mean"
    ] == pytest.approx(stats["actions"]["mean"])
    ds = DemoWindows(out, history=policy.config.history, horizon=policy.config.horizon)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    loss, _ = policy.loss(batch)
    assert torch.isfinite(loss)
    obs, *_ = env.step(policy.eval().act(obs))
    env.close()


def test_factory_errors_and_config_validation():
    obs_space, act_space = spaces_for()
    with pytest.raises(ValueError, match="unknown policy 'act'"):
        make_policy("act", obs_space, act_space)
    with pytest.raises(ValueError, match="no fields \\['d_modle'\\]"):
        make_policy("rt1", obs_space, act_space, d_modle=64)
    with pytest.raises(ValueError, match="1-D Box or a Discrete action space"):
        make_policy("bcz", obs_space, spaces.MultiDiscrete([3, 3]))
    with pytest.raises(ValueError, match="obs_mode='rgb'"):
        make_policy(
            "bcz", spaces.Dict({"state": spaces.Box(-1, 1, (3,)), "proprio": obs_space["proprio"]}), act_space
        )
    with pytest.raises(ValueError, match="num_bins must be >= 2, got 1"):
        RT1Config(num_bins=1)
    with pytest.raises(ValueError, match="fusion must be one of .*, got 'mid'"):
        CLIPConfig(fusion="mid")
    with pytest.raises(ValueError, match="history must be a positive integer, got 0"):
        BCZConfig(history=0)
    with pytest.raises(ValueError, match="n_action_steps must be <= horizon"):
        BCZConfig(horizon=2, n_action_steps=5)
    with pytest.raises(ValueError, match="text_encoder must be one of"):
        RT1Config(text_encoder="use")
    with pytest.raises(ValueError, match="stats\\['actions'\\]\\['std'\\] must be 5 finite numbers"):
        BCZConfig(stats={"actions": {**STATS["actions"], "std": [1.0, 2.0]}})
    two_d = make_policy("bcz", obs_space, spaces.Box(-1, 1, (2,)), text_encoder="hash", hidden_dim=8)
    assert two_d.config.gripper_dims == () and two_d.codec.num_continuous == 2
    cfg = BCZConfig(gripper_dims=(-1,))
    assert cfg.gripper_dims == (4,)
    assert BCZConfig.from_dict(cfg.to_dict()) == cfg


def test_clip_weights_that_cannot_load_fall_back_to_scratch_and_say_so(tmp_path, caplog):
    missing = str(tmp_path / "no-weights.pt")
    with caplog.at_level("WARNING", logger="vlagym.policies.clip.modeling_clip"):
        policy = tiny_policy("clip-late", clip_pretrained=missing)
    assert "from scratch" in caplog.text and "no-weights.pt" in caplog.text
    assert policy.config.clip_pretrained is None  # the checkpoint will say what it really holds


def test_clip_frozen_text_tower_keeps_its_weights_and_matches_the_unfrozen_encoding():
    from policy_helpers import synthetic_batch

    policy = tiny_policy("clip-cross", freeze_text=True)
    reference = tiny_policy("clip-cross")  # same seed, same weights, text tower trainable
    text_before = {k: v.clone() for k, v in policy.clip.state_dict().items() if not k.startswith("visual.")}
    vision_before = {k: v.clone() for k, v in policy.clip.visual.state_dict().items()}
    batch = synthetic_batch(policy.config, batch_size=4)
    for got, want in zip(policy.encode_text(batch["instruction"]), reference.encode_text(batch["instruction"])):
        torch.testing.assert_close(got, want.detach())
    assert len(policy._frozen_text) == 2  # one entry per distinct instruction
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss, _ = policy.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for k, v in policy.clip.state_dict().items():
        if k in text_before and k != "logit_scale":
            assert torch.equal(v, text_before[k]), f"frozen text weight {k} changed"
    assert any(not torch.equal(v, vision_before[k]) for k, v in policy.clip.visual.state_dict().items())
    trainable = policy.num_parameters(trainable_only=True)
    assert trainable < reference.num_parameters(trainable_only=True) - 3_000_000  # the token table is out


def test_bench_policy_smoke():
    from vlagym.experiments.bench import bench_policy, format_policy_rows

    overrides = {name: TINY[variant] for name, variant in BASE_VARIANTS.items()}
    rows = bench_policy(image_size=SIZE, batch_size=2, acts=2, forwards=1, overrides=overrides)
    assert [r["policy"] for r in rows] == list(policy_names())  # every registered policy, by default
    assert all(r["params"] > 0 and r["checkpoint_mb"] > 0 and r["act_ms"] > 0 for r in rows)
    assert "| rt1 |" in format_policy_rows(rows)


def test_bcz_reads_every_camera_it_is_given():
    policy = tiny_policy("bcz-2cam").eval()
    assert policy.image_keys() == ("rgb", "rgb_wrist")
    obs = observation(0)
    a = policy.act(obs)
    policy.reset()
    other = {**obs, "rgb_wrist": np.zeros_like(obs["rgb_wrist"])}
    assert not np.allclose(a, policy.act(other)), "the wrist camera did not change the action"
    policy.reset()
    with pytest.raises(KeyError, match="rgb_wrist"):
        policy.act({k: v for k, v in obs.items() if k != "rgb_wrist"})


def test_single_camera_policies_refuse_extra_cameras():
    obs_space, act_space = spaces_for()
    for name in ("rt1", "clip"):
        with pytest.raises(ValueError, match="extra_image_keys"):
            make_policy(name, obs_space, act_space, stats=STATS, extra_image_keys=("rgb_wrist",))
    with pytest.raises(ValueError, match="lacks"):
        make_policy("bcz", obs_space, act_space, stats=STATS, extra_image_keys=("rgb_left",))
