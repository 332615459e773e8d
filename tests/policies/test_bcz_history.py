"""BC-Z's frame stack (``history=k``): shapes, the act-time feature deque and its reset, acting agreeing with
the batched path, absent frames ignored, and a training step."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from policy_helpers import ACTION_DIM, INSTRUCTIONS, PROPRIO_DIM, observation, synthetic_batch, tiny_policy  # noqa: E402

from vlagym.testing import overfit_losses  # noqa: E402

torch.set_num_threads(1)

K = 3


@pytest.mark.parametrize("variant", ["bcz", "bcz-keypoints", "bcz-2cam"])
def test_shapes_and_trunk_width(variant):
    single, stacked = tiny_policy(variant), tiny_policy(variant, history=K)
    assert stacked.trunk[0].in_features == K * stacked.frame_dim + PROPRIO_DIM
    assert single.trunk[0].in_features == single.frame_dim + PROPRIO_DIM
    batch = synthetic_batch(stacked.config)
    assert batch["rgb"].shape[1] == K
    loss, _ = stacked.loss(batch)
    assert torch.isfinite(loss)
    pred = stacked.eval().predict(batch)
    assert pred.shape == (4, stacked.config.horizon, ACTION_DIM)
    assert stacked.act(observation()).shape == (ACTION_DIM,)
    short = {**batch, "rgb": batch["rgb"][:, :1]}
    with pytest.raises(ValueError, match=f"history={K}"):
        stacked.loss(short)


def test_the_deque_fills_to_history_and_resets():
    policy = tiny_policy("bcz", history=K).eval()
    for step in range(K + 2):
        policy.act(observation(step))
        assert len(policy._frames) == min(step + 1, K)
    policy.reset()
    assert len(policy._frames) == 0
    policy.act(observation(0))
    policy.act(observation(1, instruction=INSTRUCTIONS[1]))  # a new instruction starts a new history
    assert len(policy._frames) == 1


def _window(frames: list[dict], k: int, n_real: int) -> dict:
    """The DemoWindows batch of one window: the first real frame repeated over the padded slots."""
    real = frames[-n_real:]
    padded = [real[0]] * (k - n_real) + real
    return {
        "rgb": torch.from_numpy(np.stack([f["rgb"] for f in padded])).permute(0, 3, 1, 2)[None],
        "obs_mask": (torch.arange(k) >= k - n_real)[None],
        "proprio": torch.from_numpy(np.stack([f["proprio"] for f in padded]))[None],
        "instruction": [real[-1]["instruction"]],
    }


def test_act_matches_the_batched_window_of_the_same_frames():
    """act's cached features, with absent slots zeroed, give what training computes on a DemoWindows window."""
    policy = tiny_policy("bcz", history=K).eval()
    frames = [observation(s) for s in range(K + 1)]
    policy.reset()
    for t, obs in enumerate(frames):
        acted = policy.act(obs)
        n_real = min(t + 1, K)
        want = policy.predict(_window(frames[: t + 1], K, n_real))[0, 0].numpy()
        np.testing.assert_allclose(acted, want, atol=1e-5)


def test_absent_frames_do_not_matter():
    policy = tiny_policy("bcz", history=K).eval()
    frames = [observation(s) for s in range(2)]
    batch = _window(frames, K, 2)
    other = {**batch, "rgb": batch["rgb"].clone()}
    other["rgb"][:, 0] = 255 - other["rgb"][:, 0]  # the padded slot
    torch.testing.assert_close(policy.predict(batch), policy.predict(other))
    real = {**batch, "obs_mask": torch.ones(1, K, dtype=torch.bool)}
    assert not torch.equal(policy.predict(batch), policy.predict(real))


def test_history_training_step_runs_and_learns():
    policy = tiny_policy("bcz-keypoints", history=K)
    losses = overfit_losses(policy, synthetic_batch(policy.config), steps=15)
    assert losses[-1] < 0.7 * losses[0], losses


def test_history_one_keeps_the_single_frame_network():
    """history=1 is the paper's BC-Z: the same parameters, and the same output as the explicit current frame."""
    a, b = tiny_policy("bcz", seed=3), tiny_policy("bcz", seed=3, history=1)
    assert a.state_dict().keys() == b.state_dict().keys() and not hasattr(a, "class_head")
    batch = synthetic_batch(a.config)
    single = a.eval().trunk_features(batch["rgb"][:, -1], batch["proprio"][:, -1], a.text(batch["instruction"]))
    assert torch.equal(single, a.encode(batch["rgb"][:, -1:], batch["proprio"][:, -1],
                                        a.text(batch["instruction"]))["trunk"])


def test_sb3_extractor_refuses_a_frame_stack():
    from vlagym.policies.rl import BCZFeaturesExtractor

    policy = tiny_policy("bcz", history=K)
    with pytest.raises(ValueError, match="history=3"):
        BCZFeaturesExtractor(None, policy.config.to_dict())
