"""Grounding heads: heatmap and 3-D position heads trained on privileged labels, beside the BC loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlagym.agents.collect import CollectConfig, collect
from vlagym.dataio.windows import DemoWindows, dataset_roles
from vlagym.policies import load_policy
from vlagym.policies.grounding import PositionHead, RoleHeatmap, gaussian_targets, heatmap_loss
from vlagym.policies.train import TrainConfig, train

GROUNDED = {"text_encoder": "hash", "text_dim": 16, "hidden_dim": 32, "horizon": 3, "backbone_width": 8,
            "pool": "spatial_softmax", "num_keypoints": 8, "output_stride": 16, "extra_image_keys": ["rgb_wrist"],
            "heatmap_weight": 1.0, "position_weight": 1.0, "yaw_weight": 1.0, "feed_location": True}


def _train_logging(cfg: TrainConfig, policy_class) -> list[dict]:
    """Train ``cfg`` and return the logs of every ``policy_class.loss`` call, in order."""
    logs, original = [], policy_class.loss

    def spy(self, batch):
        loss, out = original(self, batch)
        logs.append(out)
        return loss, out

    policy_class.loss = spy
    try:
        train(cfg, progress=False)
    finally:
        policy_class.loss = original
    return logs


@pytest.fixture(scope="module")
def place_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("ground") / "place"
    collect(CollectConfig(env="vlagym/TabletopPlace-v0", episodes=3, out=str(out), workers=1,
                          env_kwargs={"image_size": 32, "wrist_camera": True}))
    return out


def test_head_shapes_and_soft_argmax():
    hm = RoleHeatmap(16, 2)(torch.randn(3, 16, 8, 6))
    assert hm["logits"].shape == (3, 2, 8, 6) and hm["uv"].shape == (3, 2, 2) and hm["visible"].shape == (3, 2)
    assert PositionHead(10, 2)(torch.randn(3, 10)).shape == (3, 2, 3)
    # A peaked map's soft-argmax is its cell centre, in the labels' (column, row) convention.
    logits = torch.full((1, 1, 4, 8), -50.0)
    logits[0, 0, 1, 6] = 50.0
    target = gaussian_targets(torch.tensor([[[6.5 / 8, 1.5 / 4]]]), 4, 8)
    assert target.view(4, 8).argmax() == 1 * 8 + 6
    out = {"logits": logits, "uv": torch.tensor([[[6.5 / 8, 1.5 / 4]]]), "visible": torch.zeros(1, 1)}
    loss_map, _, logs = heatmap_loss(out, out["uv"], torch.ones(1, 1, dtype=torch.bool))
    assert logs["uv_error"] == pytest.approx(0.0)
    # Invisible roles give no heatmap loss at all.
    loss_none, _, _ = heatmap_loss(out, torch.tensor([[[0.0, 0.0]]]), torch.zeros(1, 1, dtype=torch.bool))
    assert float(loss_none) == 0.0 and float(loss_map) > 0


def test_roles_come_from_the_data(place_data):
    assert dataset_roles(place_data) == ("destination", "object")


def test_shifted_images_move_their_pixel_labels(place_data):
    keys = ("object/rgb/uv", "object/rgb/visible")
    plain = DemoWindows(place_data, label_keys=keys)
    shifted = DemoWindows(place_data, label_keys=keys, augment=True, shift=4, jitter=0.0)
    moved = 0
    for i in range(0, len(plain), 5):
        a, b = plain[i], shifted[(i, 1234 + i)]
        if not a["labels/object/rgb/visible"]:
            continue
        (u0, v0), (u1, v1) = a["labels/object/rgb/uv"].numpy(), b["labels/object/rgb/uv"].numpy()
        h, w = a["rgb"].shape[-2:]
        r0, c0, r1, c1 = int(v0 * h), int(u0 * w), int(v1 * h), int(u1 * w)
        if 0 <= r1 < h and 0 <= c1 < w:
            np.testing.assert_array_equal(a["rgb"][0, :, r0, c0], b["rgb"][0, :, r1, c1])
            moved += (r0, c0) != (r1, c1)
    assert moved > 0


def test_grounded_bcz_trains_its_heads_and_keeps_them_through_save_and_load(place_data, tmp_path):
    cfg = TrainConfig(data=[str(place_data)], policy="bcz", policy_overrides=GROUNDED, out=str(tmp_path / "run"),
                      steps=60, batch_size=16, num_workers=0, eval_every=0, save_every=60, log_every=10,
                      warmup_steps=5, threads=1, lr=3e-3)
    from vlagym.policies.bcz.modeling_bcz import BCZPolicy

    policy_losses = _train_logging(cfg, BCZPolicy)
    first, last = policy_losses[:5], policy_losses[-5:]
    # The cross-entropy against a Gaussian target has the target's entropy as its floor, so it falls less
    # than the errors of the located pixel (normalised image units) and of the 3-D position (cm).
    for key, factor in (("uv_error_rgb", 0.6), ("uv_error_rgb_wrist", 0.6), ("position_error_cm", 0.6),
                        ("heatmap_rgb", 0.9), ("position", 0.6), ("yaw", 0.8)):
        before, after = np.mean([x[key] for x in first]), np.mean([x[key] for x in last])
        assert after < factor * before, (key, before, after)
    policy = load_policy(tmp_path / "run" / "best")
    assert policy.config.roles == ("destination", "object") and policy.heatmaps is not None
    assert policy.position_head is not None
    data = DemoWindows(place_data, horizon=3, image_keys=("rgb", "rgb_wrist"))
    batch = {k: torch.stack([data[i][k] for i in range(4)]) if k != "instruction" else [data[i][k] for i in range(4)]
             for k in data[0]}
    trained = load_policy(tmp_path / "run" / "checkpoint" / "policy")
    torch.testing.assert_close(policy.predict(batch), trained.predict(batch), rtol=0, atol=0)
    obs = {"rgb": batch["rgb"][0, 0].permute(1, 2, 0).numpy(), "rgb_wrist": batch["rgb_wrist"][0, 0].permute(1, 2, 0)
           .numpy(), "proprio": batch["proprio"][0, 0].numpy(), "instruction": batch["instruction"][0]}
    where = policy.locate(obs)
    assert where["rgb"]["heatmap"].shape[0] == 2 and where["position"].shape == (2, 3)
    assert where["yaw"].shape == (2, 2) and policy.yaw_head is not None
    np.testing.assert_allclose(where["rgb"]["heatmap"].reshape(2, -1).sum(-1), 1.0, rtol=1e-5)

    # Rollout videos draw the heatmaps on request, and only then.
    import gymnasium as gym

    from vlagym.agents.policy_agent import PolicyAgent
    from vlagym.agents.rollout import run_episode

    env = gym.make("vlagym/TabletopPlace-v0", image_size=32, wrist_camera=True, max_episode_steps=3)
    agent = PolicyAgent(policy)
    plain = run_episode(env, 2_000_000, lambda e: agent, record=True)
    drawn = run_episode(env, 2_000_000, lambda e: agent, record=True, heatmaps=True)
    env.close()
    assert len(plain.frames) == len(drawn.frames) == 4
    assert all(not np.array_equal(a, b) for a, b in zip(plain.frames, drawn.frames))
    from vlagym.experiments.cli import main

    gif = tmp_path / "ground.gif"
    assert main(["record", "--policy", str(tmp_path / "run"), "--env", "vlagym/TabletopPlace-v0", "--heatmaps",
                 "--out", str(gif)]) == 0
    assert gif.stat().st_size > 0


def test_a_dataset_without_labels_names_the_missing_key(tmp_path):
    import h5py

    out = tmp_path / "old"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=1, out=str(out), workers=1,
                          env_kwargs={"image_size": 32}))
    for shard in out.glob("shard_*.hdf5"):
        with h5py.File(shard, "a") as f:
            for demo in f["data"].values():
                del demo["labels"]
    with pytest.raises(KeyError, match=r"labels/object/rgb/uv"):
        DemoWindows(out, label_keys=("object/rgb/uv",))
    cfg = TrainConfig(data=[str(out)], policy="bcz", out=str(tmp_path / "run"), steps=2, batch_size=2, num_workers=0,
                      eval_every=0, threads=1,
                      policy_overrides={"text_encoder": "hash", "text_dim": 8, "hidden_dim": 16, "heatmap_weight": 1.0})
    with pytest.raises(ValueError, match="no privileged labels"):
        train(cfg, progress=False)


def test_a_run_refused_for_a_missing_label_can_be_rerun_in_the_same_folder(tmp_path):
    import h5py

    out = tmp_path / "noyaw"
    collect(CollectConfig(env="vlagym/TabletopPickUp-v0", episodes=1, out=str(out), workers=1,
                          env_kwargs={"image_size": 32}))
    for shard in out.glob("shard_*.hdf5"):
        with h5py.File(shard, "a") as f:
            for demo in f["data"].values():
                del demo["labels/object/yaw"]
    over = {"text_encoder": "hash", "text_dim": 8, "hidden_dim": 16, "heatmap_weight": 1.0, "yaw_weight": 1.0}
    cfg = TrainConfig(data=[str(out)], policy="bcz", out=str(tmp_path / "run"), steps=2, batch_size=2, num_workers=0,
                      eval_every=0, threads=1, policy_overrides=over)
    with pytest.raises(KeyError, match=r"labels/object/yaw"):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()
    # The corrected command, same out=: it trains, where it used to say the folder already holds a run.
    train(TrainConfig(**{**cfg.__dict__, "policy_overrides": {**over, "yaw_weight": 0.0}}), progress=False)
    assert (tmp_path / "run" / "config.yaml").exists()


def test_grounding_needs_roles_and_other_policies_refuse_it():
    from gymnasium import spaces

    from vlagym.policies import make_policy

    obs = spaces.Dict({"rgb": spaces.Box(0, 255, (32, 32, 3), np.uint8), "instruction": spaces.Text(160),
                       "proprio": spaces.Box(-2.0, 2.0, (6,), np.float32)})
    act = spaces.Box(-1.0, 1.0, (5,), np.float32)
    with pytest.raises(ValueError, match="roles must name the roles"):
        make_policy("bcz", obs, act, text_encoder="hash", heatmap_weight=1.0)
    with pytest.raises(ValueError, match="feed_location needs"):
        make_policy("bcz", obs, act, text_encoder="hash", feed_location=True)
    with pytest.raises(ValueError, match="heatmap_weight must be a number >= 0"):
        make_policy("bcz", obs, act, text_encoder="hash", heatmap_weight=-1.0, roles=("object",))
    with pytest.raises(ValueError, match="CLIP-fusion policy has no grounding heads"):
        make_policy("clip", obs, act, heatmap_weight=1.0, roles=("object",))


def test_grounded_rt1_trains_its_heads_through_the_transformer(place_data, tmp_path):
    """RT-1 gains the same heads: a heatmap on its stride-8 stage, position and yaw from its tokens, and a
    location token per frame in the Transformer's sequence."""
    overrides = {"text_encoder": "hash", "text_dim": 16, "d_model": 32, "num_layers": 1, "num_heads": 2,
                 "ff_dim": 64, "history": 2, "dropout": 0.0, "heatmap_weight": 1.0, "position_weight": 1.0,
                 "yaw_weight": 1.0, "feed_location": True}
    cfg = TrainConfig(data=[str(place_data)], policy="rt1", policy_overrides=overrides, out=str(tmp_path / "rt1"),
                      steps=100, batch_size=8, num_workers=0, eval_every=0, save_every=100, log_every=5,
                      warmup_steps=4, threads=1, lr=3e-3)
    from vlagym.policies.rt1.modeling_rt1 import RT1Policy

    logs = _train_logging(cfg, RT1Policy)
    for key in ("uv_error_rgb", "position_error_cm"):
        before, after = np.mean([x[key] for x in logs[:10]]), np.mean([x[key] for x in logs[-10:]])
        assert after < 0.8 * before, (key, before, after)
    policy = load_policy(tmp_path / "rt1" / "best")
    assert policy.tokens_per_frame == policy.config.tokens_per_image + 1
    data = DemoWindows(place_data, history=2, horizon=1)
    obs = {"rgb": data[5]["rgb"][-1].permute(1, 2, 0).numpy(), "proprio": data[5]["proprio"][-1].numpy(),
           "instruction": data[5]["instruction"]}
    where = policy.locate(obs)
    assert where["rgb"]["heatmap"].shape[0] == 2 and where["position"].shape == (2, 3) and where["yaw"].shape == (2, 2)
    policy.reset()
    a = policy.act(obs)
    again = load_policy(tmp_path / "rt1" / "best")
    assert (again.act(obs) == a).all()
