"""The SB3 features extractors, their start from a vl-train model, and BC-Z initialisation of PPO's actor."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import MultiInputActorCriticPolicy

from vlagym.policies.rl import (
    BCZFeaturesExtractor,
    VLAFeaturesExtractor,
    VLFeaturesExtractor,
    init_actor_from_bcz,
    load_vl_weights,
    read_vl_extractor_config,
    vl_instruction,
)
from vlagym.policies.sb3_env import InstructionEncoder, SB3ObsTransform, sb3_observation

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


# --- starting from a vl-train model ---------------------------------------------------------------------------
# A micro open_clip (as in tests/vl), pre-trained at 32 px; untrained weights are enough to check the plumbing.
VL_MICRO = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def vl_run(tmp_path_factory):
    """A vl-train run folder (``model/`` inside) written by ``VLModel.save``."""
    from vlagym.vl.model import VLModel

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("vl") / "run"
    VLModel("vlagym-clip-tiny", VL_MICRO, 32).save(run / "model")
    return run


def _vl_setup(vl_run, size=32, **kwargs):
    cfg = read_vl_extractor_config(vl_run)
    encoder = InstructionEncoder.from_dict(vl_instruction(cfg))
    space = _space(encoder, size)
    return cfg, encoder, space, VLFeaturesExtractor(space, cfg, instruction=encoder.to_dict(), **kwargs)


def _vl_batch(space, encoder, instructions, seed=0):
    obs = [sb3_observation(observation(seed + i, instruction=t, size=space["rgb"].shape[-1]), space, encoder)
           for i, t in enumerate(instructions)]
    return {k: torch.as_tensor(np.stack([o[k] for o in obs])) for k in space.spaces}


def test_vl_instruction_is_the_vl_tokenizers_ids_and_passes_check_env(vl_run):
    import warnings

    from stable_baselines3.common.env_checker import check_env

    from vlagym.policies.sb3_env import make_sb3_env
    from vlagym.vl.model import VLModel

    fields = vl_instruction(read_vl_extractor_config(vl_run))
    assert fields == {"kind": "clip", "model": "vlagym-clip-tiny", "max_tokens": 24}
    env = make_sb3_env("vlagym/TabletopTouch-v0", fields, image_size=40)  # SB3 warns below 36 px
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env)
        assert not [str(w.message) for w in caught if "stable_baselines3" in w.filename]
        space = env.observation_space["instruction"]
        assert space.shape == (24,) and space.dtype == np.int64 and int(space.high.max()) == 49407
        obs, _ = env.reset(seed=5)
        want = VLModel.load(vl_run / "model").tokenizer([env.unwrapped.task.instruction])[0].numpy()
        np.testing.assert_array_equal(obs["instruction"], want)
        assert env.observation_space.contains(obs)
    finally:
        env.close()
    with pytest.raises(ValueError, match="needs model=<open_clip architecture>"):
        InstructionEncoder("clip")


def test_vl_extractor_starts_from_the_saved_towers(vl_run):
    from safetensors.torch import load_file

    from vlagym.vl.model import VLModel

    torch.manual_seed(1)
    cfg, encoder, space, _ = _vl_setup(vl_run)
    saved = load_file(str(vl_run / "model" / "open_clip_model.safetensors"))
    for share, count in ((True, 1), (False, 2)):  # PPO's shared extractor, or separate actor and critic ones
        policy = MultiInputActorCriticPolicy(
            space, gym.spaces.Box(-1, 1, (5,), np.float32), lambda _: 1e-4,
            features_extractor_class=VLFeaturesExtractor,
            features_extractor_kwargs={"vl_config": cfg, "instruction": encoder.to_dict()},
            share_features_extractor=share, normalize_images=False)
        ext = policy.pi_features_extractor
        assert not torch.equal(ext.clip.text_projection, saved["text_projection"])  # fresh weights before loading
        assert load_vl_weights(policy, vl_run) == count
        for extractor in {id(m): m for m in (policy.pi_features_extractor, policy.vf_features_extractor)}.values():
            state = extractor.clip.state_dict()
            assert state.keys() == saved.keys()
            for key, value in saved.items():
                assert torch.equal(state[key], value), key
    # The features are the VL model's own normalised embeddings of the same image and instruction.
    vl = VLModel.load(vl_run / "model")
    raw = [observation(i, instruction=t, size=32) for i, t in enumerate(INSTRUCTIONS)]
    batch = _vl_batch(space, encoder, INSTRUCTIONS)
    with torch.no_grad():
        feats = ext(batch)
        want_img = torch.nn.functional.normalize(vl.encode_image(np.stack([o["rgb"] for o in raw])), dim=-1)
        want_txt = torch.nn.functional.normalize(vl.encode_text(INSTRUCTIONS), dim=-1)
    assert ext.features_dim == 32 + 6 + 32 and feats.shape == (2, ext.features_dim)
    torch.testing.assert_close(feats[:, :32], want_img, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(feats[:, 32:38], batch["proprio"])
    torch.testing.assert_close(feats[:, 38:], want_txt, atol=1e-5, rtol=1e-4)


def test_vl_text_features_differ_between_instructions_and_images_are_resized(vl_run):
    torch.manual_seed(0)
    _, encoder, space, ext = _vl_setup(vl_run, size=48)  # the env renders 48 px, the towers read 32
    batch = _vl_batch(space, encoder, [INSTRUCTIONS[0], INSTRUCTIONS[1], INSTRUCTIONS[0]])
    for k in ("rgb", "proprio"):
        batch[k] = batch[k][:1].expand_as(batch[k]).clone()
    feats = ext(batch)
    text = feats[:, -ext.embed_dim:]
    assert not torch.allclose(text[0], text[1], atol=1e-3), "the text tower ignores the instruction"
    torch.testing.assert_close(text[0], text[2])
    torch.testing.assert_close(feats[0, :-ext.embed_dim], feats[1, :-ext.embed_dim])  # same image, same features
    small = torch.nn.functional.interpolate(batch["rgb"][:1].float() / 255, size=(32, 32), mode="bilinear",
                                            align_corners=False, antialias=True)
    with torch.no_grad():
        want = ext.clip.encode_image((small - ext.mean) / ext.std, normalize=True)
    torch.testing.assert_close(feats[:1, :ext.embed_dim], want)
    feats.sum().backward()  # trainable by default: both towers get gradients
    assert ext.clip.visual.conv1.weight.grad.abs().sum() > 0
    assert ext.clip.token_embedding.weight.grad.abs().sum() > 0


def test_frozen_vl_towers_get_no_gradients_and_stay_in_eval_mode(vl_run):
    _, encoder, space, ext = _vl_setup(vl_run, freeze=True)
    ext.train()
    assert not ext.clip.training and not any(p.requires_grad for p in ext.clip.parameters())
    feats = ext(_vl_batch(space, encoder, INSTRUCTIONS))
    assert not feats.requires_grad
    assert all(p.grad is None for p in ext.clip.parameters())


def test_vl_errors_name_the_problem(vl_run, tmp_path):
    cfg, encoder, _, _ = _vl_setup(vl_run)
    state_space = gym.spaces.Dict({"state": gym.spaces.Box(-100, 100, (30,), np.float32),
                                   "instruction": encoder.space,
                                   "proprio": gym.spaces.Box(-2, 2, (6,), np.float32)})
    with pytest.raises(ValueError, match="has an image encoder, but the observation holds no image"):
        VLFeaturesExtractor(state_space, cfg)
    with pytest.raises(ValueError, match="reads the VL model's token ids"):  # hashed word ids are ints too
        VLFeaturesExtractor(_space(TOKENS, 32), cfg, instruction=TOKENS.to_dict())
    with pytest.raises(ValueError, match="reads the VL model's token ids"):
        VLFeaturesExtractor(_space(InstructionEncoder("sentence"), 32), cfg)
    with pytest.raises(ValueError, match="read by VLFeaturesExtractor"):
        VLAFeaturesExtractor(_space(encoder, 32), instruction=encoder.to_dict())
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
        read_vl_extractor_config(missing)
    (tmp_path / "not_vl").mkdir()
    with pytest.raises(FileNotFoundError, match="not_vl holds no vl_config.json"):
        read_vl_extractor_config(tmp_path / "not_vl")
