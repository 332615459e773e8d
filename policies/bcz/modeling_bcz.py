"""BC-Z: one image and an instruction to a chunk of future actions.

The image passes through a ResNet-18 whose four stages are FiLM-conditioned on the instruction
embedding; average-pooled features (or spatial-softmax keypoints, ``pool="spatial_softmax"``),
concatenated with normalised proprioception, feed an MLP
trunk with two heads: continuous action dimensions (z-scores, Huber loss) and gripper logits
(BCE), each for ``horizon`` future steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlagym.policies.base import Policy, _Frame, mlp, text_encoder_from_config
from vlagym.policies.bcz.configuration_bcz import BCZConfig
from vlagym.policies.normalize import ActionCodec, ProprioNormalizer
from vlagym.policies.vision import FiLMResNet18, SpatialSoftmax


class BCZPolicy(Policy):
    """BC-Z policy (see the module docstring)."""

    name = "bcz"
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
        self.proprio_norm = ProprioNormalizer(cfg.stats["proprio"])
        self.codec = ActionCodec.from_config(cfg)
        in_dim = feat_dim + (cfg.proprio_dim if cfg.use_proprio else 0)
        self.trunk = mlp(in_dim, cfg.hidden_dim, cfg.num_hidden_layers, cfg.dropout)
        self.continuous_head = nn.Linear(cfg.hidden_dim, cfg.horizon * self.codec.num_continuous)
        ng = self.codec.num_gripper
        self.gripper_head = nn.Linear(cfg.hidden_dim, cfg.horizon * ng) if ng else None
        self._cond: torch.Tensor | None = None

    def _encoder(self, cfg: BCZConfig, load_pretrained: bool) -> tuple[nn.Module, nn.Module | None, int]:
        backbone = FiLMResNet18(
            self.text.dim, cfg.pretrained_backbone if load_pretrained else None, cfg.output_stride, cfg.backbone_width
        )
        if cfg.pool == "spatial_softmax":
            pool = SpatialSoftmax(backbone.out_channels, cfg.num_keypoints)
            return backbone, pool, pool.out_dim
        return backbone, None, backbone.out_channels

    def _features(self, backbone: nn.Module, pool: nn.Module | None, images: torch.Tensor,
                  cond: torch.Tensor) -> torch.Tensor:
        fmap = backbone(images, cond)
        return fmap.mean(dim=(2, 3)) if pool is None or isinstance(pool, nn.Identity) else pool(fmap)

    def trunk_features(
        self, images: torch.Tensor, proprio: torch.Tensor, cond: torch.Tensor,
        extra_images: tuple[torch.Tensor, ...] = (),
    ) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` images (and one more per extra camera), raw ``(B, P)`` proprio,
        ``(B, D)`` instruction embedding -> the MLP trunk's output ``(B, hidden_dim)``."""
        if len(extra_images) != len(self.extra_backbones):
            raise ValueError(f"bcz: got {len(extra_images)} extra camera images, config.extra_image_keys has "
                             f"{len(self.extra_backbones)}")
        feats = torch.cat([
            self._features(self.backbone, self.pool, images, cond),
            *(self._features(b, p, im, cond)
              for b, p, im in zip(self.extra_backbones, self.extra_pools, extra_images, strict=True)),
        ], dim=-1)
        if self.config.use_proprio:
            feats = torch.cat([feats, self.proprio_norm(proprio)], dim=-1)
        return self.trunk(feats)

    def heads(
        self, images: torch.Tensor, proprio: torch.Tensor, cond: torch.Tensor,
        extra_images: tuple[torch.Tensor, ...] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``trunk_features`` -> continuous z-scores ``(B, horizon, Ac)`` and gripper logits
        ``(B, horizon, Ag)``."""
        h = self.trunk_features(images, proprio, cond, extra_images)
        b, hor = h.shape[0], self.config.horizon
        grip = self.gripper_head(h) if self.gripper_head is not None else h.new_zeros(b, 0)
        return (
            self.continuous_head(h).view(b, hor, self.codec.num_continuous),
            grip.view(b, hor, self.codec.num_gripper),
        )

    def _batch_heads(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images = self._batch_images(batch)[:, -1]  # the current frame
        extras = tuple(self._batch_images(batch, k)[:, -1] for k in self.config.extra_image_keys)
        proprio = batch["proprio"][:, -1].to(self.device, torch.float32)
        return self.heads(images, proprio, self.text(list(batch["instruction"])), extras)

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        cont, grip = self._batch_heads(batch)
        actions, mask = self._batch_actions(batch)
        return self.codec.chunk_loss(
            cont, grip, actions, mask, self.config.huber_delta, self.config.gripper_weight
        )

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.codec.decode(*self._batch_heads(batch))

    def reset(self) -> None:
        super().reset()
        self._cond = None

    def _plan(self, frame: _Frame) -> torch.Tensor:
        if self._cond is None:
            self._cond = self.text([frame.instruction])
        cont, grip = self.heads(frame.image[None], frame.proprio[None], self._cond,
                                tuple(im[None] for im in frame.extra_images))
        return self.codec.decode(cont, grip)[0]
