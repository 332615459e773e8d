"""BC-Z: one image (or a stack of the last ``history``) and an instruction to a chunk of future actions.

The image passes through a ResNet-18 whose four stages are FiLM-conditioned on the instruction
embedding; average-pooled features (or spatial-softmax keypoints, ``pool="spatial_softmax"``) of each
frame, concatenated oldest first and with normalised proprioception, feed an MLP
trunk with two heads: continuous action dimensions (z-scores, Huber loss) and gripper logits
(BCE), each for ``horizon`` future steps. A discrete action space has one head instead: ``n`` class
logits per step (cross-entropy; argmax when acting).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlagym.policies.base import Policy, StepModule, _Frame, mlp, text_encoder_from_config
from vlagym.policies.bcz.configuration_bcz import BCZConfig
from vlagym.policies.grounding import PositionHead, RoleHeatmap, grounding_loss, located, location_features
from vlagym.policies.normalize import ActionCodec, ProprioNormalizer
from vlagym.policies.registry import register_policy
from vlagym.policies.vision import FiLMResNet18, SpatialSoftmax


@register_policy("bcz")
class BCZPolicy(Policy):
    """BC-Z policy (see the module docstring). With grounding weights set (``heatmap_weight``,
    ``position_weight``; ``vlagym.policies.grounding``) each camera's encoder gains a heatmap per role on
    its stride-8 feature map (stage 2, joined with the upsampled last stage) and the pooled features a
    3-D position head; ``feed_location`` hands their predictions to the MLP trunk."""

    config_class = BCZConfig

    def __init__(self, config: BCZConfig, load_pretrained: bool = True) -> None:
        super().__init__(config)
        cfg = config
        self.text = text_encoder_from_config(cfg)
        self.backbone, self.pool, feat_dim = self._encoder(cfg, load_pretrained)
        # One encoder per extra camera (config.extra_image_keys), features joined with the main one's.
        extra = [self._encoder(cfg, load_pretrained) for _ in cfg.extra_image_keys]
        self.extra_backbones = nn.ModuleList(e[0] for e in extra)
        self.extra_pools = nn.ModuleList(e[1] or nn.Identity() for e in extra)
        feat_dim *= 1 + len(extra)
        self.frame_dim = feat_dim
        self.proprio_norm = ProprioNormalizer(cfg.stats["proprio"])
        self.codec = ActionCodec.from_config(cfg)
        in_dim = cfg.history * feat_dim + (cfg.proprio_dim if cfg.use_proprio else 0)
        r, cameras = len(cfg.roles), 1 + len(extra)
        self.heatmaps = None
        if cfg.heatmap_weight > 0:
            c = self.backbone.stage_channels
            self.heatmaps = nn.ModuleList(RoleHeatmap(c[1] + c[3], r) for _ in range(cameras))
        self.position_head = PositionHead(in_dim, r) if cfg.position_weight > 0 else None
        self.yaw_head = PositionHead(in_dim, r, outputs=2) if cfg.yaw_weight > 0 else None
        if cfg.feed_location:
            in_dim += (3 * r * cameras if self.heatmaps is not None else 0) + \
                (3 * r if self.position_head is not None else 0) + (2 * r if self.yaw_head is not None else 0)
        self.trunk = mlp(in_dim, cfg.hidden_dim, cfg.num_hidden_layers, cfg.dropout)
        if cfg.action_classes:
            self.class_head = nn.Linear(cfg.hidden_dim, cfg.horizon * cfg.action_classes)
        else:
            self.continuous_head = nn.Linear(cfg.hidden_dim, cfg.horizon * self.codec.num_continuous)
            ng = self.codec.num_gripper
            self.gripper_head = nn.Linear(cfg.hidden_dim, cfg.horizon * ng) if ng else None
        self._cond: torch.Tensor | None = None
        self._frames: deque[torch.Tensor] = deque(maxlen=cfg.history)  # act's past frame features (F,)

    def _encoder(self, cfg: BCZConfig, load_pretrained: bool) -> tuple[nn.Module, nn.Module | None, int]:
        backbone = FiLMResNet18(
            self.text.dim, cfg.pretrained_backbone if load_pretrained else None, cfg.output_stride, cfg.backbone_width
        )
        if cfg.pool == "spatial_softmax":
            pool = SpatialSoftmax(backbone.out_channels, cfg.num_keypoints)
            return backbone, pool, pool.out_dim
        return backbone, None, backbone.out_channels

    def _features(self, camera: int, images: torch.Tensor, cond: torch.Tensor
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """One camera's pooled features ``(B, F)`` and, with a heatmap head, its output."""
        backbone = self.backbone if camera == 0 else self.extra_backbones[camera - 1]
        pool = self.pool if camera == 0 else self.extra_pools[camera - 1]
        if self.heatmaps is None:
            fmap = backbone(images, cond)
            hm = None
        else:
            stages = backbone.stages_out(images, cond)
            fmap, fine = stages[-1], stages[1]
            up = F.interpolate(fmap, size=fine.shape[-2:], mode="bilinear", align_corners=False)
            hm = self.heatmaps[camera](torch.cat([fine, up], dim=1))
        feats = fmap.mean(dim=(2, 3)) if pool is None or isinstance(pool, nn.Identity) else pool(fmap)
        return feats, hm

    def frame_features(
        self, images: torch.Tensor, cond: torch.Tensor, extra_images: tuple[torch.Tensor, ...] = ()
    ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """uint8 ``(N, 3, H, W)`` frames (and one more per extra camera), ``(N, D)`` instruction embedding ->
        every camera's pooled features joined, ``(N, frame_dim)``, and the heatmap heads' outputs."""
        if len(extra_images) != len(self.extra_backbones):
            raise ValueError(f"bcz: got {len(extra_images)} extra camera images, config.extra_image_keys has "
                             f"{len(self.extra_backbones)}")
        outs = [self._features(i, im, cond) for i, im in enumerate((images, *extra_images))]
        return torch.cat([f for f, _ in outs], dim=-1), [hm for _, hm in outs if hm is not None]

    def encode(
        self, images: torch.Tensor, proprio: torch.Tensor, cond: torch.Tensor,
        extra_images: tuple[torch.Tensor, ...] = (), obs_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """uint8 ``(B, T, 3, H, W)`` frames ending at the current one, ``T = config.history`` (or
        ``(B, 3, H, W)``: the current frame alone, earlier ones absent), the same per extra camera, raw
        ``(B, P)`` proprio of the current step, ``(B, D)`` instruction embedding, bool ``(B, T)`` real-frame
        mask (default all real) -> ``trunk`` ``(B, hidden_dim)``, ``heatmaps`` (one ``RoleHeatmap`` output per
        camera on the current frame, or none), ``position`` ``(B, R, 3)`` and ``yaw`` ``(B, R, 2)`` (each None
        without its head)."""
        if images.dim() == 4:
            images, extra_images = images[:, None], tuple(im[:, None] for im in extra_images)
        b, t = images.shape[:2]
        if t == 1:
            feats, heatmaps = self.frame_features(images[:, 0], cond, tuple(im[:, 0] for im in extra_images))
            feats = feats[:, None]
        else:
            feats, heatmaps = self.frame_features(images.flatten(0, 1), cond.repeat_interleave(t, dim=0),
                                                  tuple(im.flatten(0, 1) for im in extra_images))
            feats = feats.unflatten(0, (b, t))
            heatmaps = [{k: v.unflatten(0, (b, t))[:, -1] for k, v in hm.items()} for hm in heatmaps]
        return self.fuse(feats, proprio, heatmaps, obs_mask)

    def fuse(
        self, feats: torch.Tensor, proprio: torch.Tensor, heatmaps: list[dict[str, torch.Tensor]],
        obs_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """``(B, T, frame_dim)`` frame features ending at the current frame (``T <= history``: missing older
        slots are absent) with the current step's proprio and heatmaps -> ``encode``'s outputs."""
        k = self.config.history
        b, t = feats.shape[:2]
        if t > k:
            raise ValueError(f"bcz: {t} frames per sample, config.history is {k}")
        if k > 1:  # absent frames (before the episode's start, or not given) contribute zeros
            mask = torch.ones(b, t, dtype=torch.bool, device=feats.device) if obs_mask is None else obs_mask
            feats = feats * mask.to(feats.device, feats.dtype)[..., None]
            if t < k:
                feats = torch.cat([feats.new_zeros(b, k - t, feats.shape[-1]), feats], dim=1)
        feats = feats.flatten(1)
        if self.config.use_proprio:
            feats = torch.cat([feats, self.proprio_norm(proprio)], dim=-1)
        position = self.position_head(feats) if self.position_head is not None else None
        yaw = self.yaw_head(feats) if self.yaw_head is not None else None
        if self.config.feed_location:
            feats = torch.cat([feats, location_features(heatmaps, position, yaw)], dim=-1)
        return {"trunk": self.trunk(feats), "heatmaps": heatmaps, "position": position, "yaw": yaw}

    def trunk_features(
        self, images: torch.Tensor, proprio: torch.Tensor, cond: torch.Tensor,
        extra_images: tuple[torch.Tensor, ...] = (),
    ) -> torch.Tensor:
        """As ``encode`` -> the MLP trunk's output ``(B, hidden_dim)``."""
        return self.encode(images, proprio, cond, extra_images)["trunk"]

    def action_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Discrete actions: ``(B, hidden_dim)`` trunk features -> ``(B, horizon, action_classes)`` logits."""
        return self.class_head(h).view(h.shape[0], self.config.horizon, self.config.action_classes)

    def _action_heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.action_classes:
            raise ValueError("bcz: this policy has discrete actions; its head gives action_logits, not "
                             "continuous z-scores and gripper logits")
        b, hor = h.shape[0], self.config.horizon
        grip = self.gripper_head(h) if self.gripper_head is not None else h.new_zeros(b, 0)
        return (
            self.continuous_head(h).view(b, hor, self.codec.num_continuous),
            grip.view(b, hor, self.codec.num_gripper),
        )

    def heads(
        self, images: torch.Tensor, proprio: torch.Tensor, cond: torch.Tensor,
        extra_images: tuple[torch.Tensor, ...] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``trunk_features`` -> continuous z-scores ``(B, horizon, Ac)`` and gripper logits
        ``(B, horizon, Ag)``."""
        return self._action_heads(self.trunk_features(images, proprio, cond, extra_images))

    def _batch_encode(self, batch: dict[str, Any]) -> dict[str, Any]:
        k = self.config.history
        images = self._batch_images(batch)
        if images.shape[1] < k:
            raise ValueError(f"bcz: batch holds {images.shape[1]} frames per sample, config.history is {k}; "
                             f"build DemoWindows with history={k}")
        images = images[:, -k:]  # the current frame and the k - 1 before it
        extras = tuple(self._batch_images(batch, key)[:, -k:] for key in self.config.extra_image_keys)
        proprio = batch["proprio"][:, -1].to(self.device, torch.float32)
        mask = batch.get("obs_mask")
        mask = mask[:, -k:].to(self.device) if mask is not None and k > 1 else None
        return self.encode(images, proprio, self.text(list(batch["instruction"])), extras, mask)

    def _batch_heads(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._action_heads(self._batch_encode(batch)["trunk"])

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        out = self._batch_encode(batch)
        actions, mask = self._batch_actions(batch)
        if cfg.action_classes:
            loss, logs = self.codec.class_loss(self.action_logits(out["trunk"]), actions, mask)
        else:
            cont, grip = self._action_heads(out["trunk"])
            loss, logs = self.codec.chunk_loss(cont, grip, actions, mask, cfg.huber_delta, cfg.gripper_weight)
        if not cfg.grounded:
            return loss, logs
        return grounding_loss(self, batch, loss, logs, out["heatmaps"], out["position"], out["yaw"])

    @torch.no_grad()
    def locate(self, obs: dict[str, Any]) -> dict[str, Any]:
        """The grounding heads' view of one observation: per camera the heatmap probabilities
        ``(R, h, w)``, pixel positions ``(R, 2)`` and visibility probabilities ``(R,)``, and the 3-D
        positions ``(R, 3)`` in metres (robot frame), as numpy arrays keyed by camera and role order."""
        if not self.config.grounded:
            raise ValueError("bcz.locate: this policy has no grounding heads (heatmap_weight and "
                             "position_weight are 0)")
        frame = self._parse_obs(obs)
        out = self.encode(frame.image[None], frame.proprio[None], self.text([frame.instruction]),
                          tuple(im[None] for im in frame.extra_images))
        return located(self, out["heatmaps"], out["position"], out["yaw"])

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.config.action_classes:
            return self.codec.decode_classes(self.action_logits(self._batch_encode(batch)["trunk"]))
        return self.codec.decode(*self._batch_heads(batch))

    def reset(self) -> None:
        super().reset()
        self._cond = None
        self._frames.clear()

    # --- the per-step network -------------------------------------------------------------------------------
    def step_module(self) -> BCZStep:
        return BCZStep(self)

    def step_inputs(self, frame: _Frame) -> dict[str, torch.Tensor]:
        if self._cond is None:  # the instruction (hence FiLM) is fixed until reset
            self._cond = self.text([frame.instruction])
        inputs = {"image": frame.image[None]}
        inputs.update({f"image_{key}": im[None] for key, im in zip(self.config.extra_image_keys,
                                                                   frame.extra_images, strict=True)})
        inputs.update(cond=self._cond, proprio=frame.proprio[None])
        k = self.config.history
        if k > 1:  # each frame is encoded once, when it arrives; slots before the episode's start are zeros
            past = list(self._frames)[-(k - 1):]
            zeros = [self._cond.new_zeros(self.frame_dim)] * (k - 1 - len(past))
            inputs["past_features"] = torch.stack(zeros + past)[None]
        return inputs

    def finish_step(self, outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raw = outputs[0]
        if self.config.history > 1:
            self._frames.append(outputs[1][0])
        if self.config.action_classes:
            return self.codec.decode_classes(raw)[0]
        nc = self.codec.num_continuous
        return self.codec.decode(raw[..., :nc], raw[..., nc:])[0]


class BCZStep(StepModule):
    """BC-Z's decision: the current frame (one uint8 ``(1, 3, H, W)`` image per camera), the instruction
    embedding ``cond`` ``(1, D)``, raw ``proprio`` ``(1, P)`` and, with ``history`` k > 1, the k - 1 earlier
    frames' features ``past_features`` ``(1, k - 1, frame_dim)`` (zeros before the episode's start) ->
    ``raw``: continuous z-scores and gripper logits joined, ``(1, horizon, Ac + Ag)`` (discrete actions:
    class logits ``(1, horizon, n)``), and with k > 1 this frame's ``features`` ``(1, frame_dim)``."""

    def __init__(self, policy: BCZPolicy) -> None:
        cfg = policy.config
        names = ("image", *(f"image_{k}" for k in cfg.extra_image_keys), "cond", "proprio")
        if cfg.history > 1:
            super().__init__(policy, (*names, "past_features"), ("raw", "features"))
        else:
            super().__init__(policy, names, ("raw",))

    def forward(self, image: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = self.policy
        ne = len(p.extra_backbones)
        extras, (cond, proprio, *past) = rest[:ne], rest[ne:]
        feats, heatmaps = p.frame_features(image, cond, tuple(extras))
        window = feats[:, None] if not past else torch.cat([past[0], feats[:, None]], dim=1)
        h = p.fuse(window, proprio, heatmaps)["trunk"]
        if p.config.action_classes:
            raw = p.action_logits(h)
        else:
            raw = torch.cat(p._action_heads(h), dim=-1)
        return (raw, feats) if past else (raw,)
