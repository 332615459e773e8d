"""RT-1: images and an instruction to discretised actions.

Each image passes through an EfficientNet whose MBConv blocks are FiLM-conditioned on the
instruction embedding; a 1x1 conv projects the final feature map to ``d_model`` and TokenLearner
reduces it to 8 tokens. The tokens of the last 6 images (48) are followed by one token per action
dimension (zeros plus their position embedding, as in RT-1's implementation), and a decoder-only
Transformer with causal masking reads the sequence; each action token's output is classified
into 256 bins, uniform over the data's [min, max] of that dimension. A discrete action space
(``action_classes`` n) has one action token, classified into its n actions.

At inference the tokens of past frames are cached, so each ``act`` encodes one new image.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlagym.policies.base import Policy, StepModule, _Frame, text_encoder_from_config
from vlagym.policies.grounding import PositionHead, RoleHeatmap, grounding_loss, located, location_features
from vlagym.policies.normalize import ActionCodec
from vlagym.policies.registry import register_policy
from vlagym.policies.rt1.configuration_rt1 import RT1Config
from vlagym.policies.vision import FiLMEfficientNet


class TokenLearner(nn.Module):
    """TokenLearner (Ryoo et al. 2021) as RT-1 uses it: an MLP over each position's normalised
    features gives one attention map per output token (softmax over positions); each token is the
    map-weighted sum of the features.

    ``(N, C, H, W) -> (N, num_tokens, C)``.
    """

    def __init__(self, dim: int, num_tokens: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        weights = self.mlp(self.norm(x)).softmax(dim=1)  # (N, HW, S)
        return torch.einsum("nps,npc->nsc", weights, x)


@register_policy("rt1")
class RT1Policy(Policy):
    """RT-1 policy (see the module docstring). ``load_pretrained=False`` skips loading backbone
    weights (``from_pretrained`` restores everything from the checkpoint instead)."""

    config_class = RT1Config

    def __init__(self, config: RT1Config, load_pretrained: bool = True) -> None:
        super().__init__(config)
        cfg = config
        self.text = text_encoder_from_config(cfg)
        self.backbone = FiLMEfficientNet(
            self.text.dim, cfg.backbone, cfg.pretrained_backbone, load_pretrained
        )
        self.proj = nn.Conv2d(self.backbone.out_channels, cfg.d_model, kernel_size=1)
        self.token_learner = TokenLearner(cfg.d_model, cfg.tokens_per_image, cfg.token_learner_hidden)
        # Grounding (``vlagym.policies.grounding``): a heatmap per role on the stride-8 stage joined with the
        # upsampled token map, position and yaw heads on the frame's mean token; with feed_location one
        # more token per frame carries their predictions into the Transformer.
        r = len(cfg.roles)
        self.heatmap = (RoleHeatmap(self.backbone.fine_channels + cfg.d_model, r) if cfg.heatmap_weight > 0
                        else None)
        self.position_head = PositionHead(cfg.d_model, r) if cfg.position_weight > 0 else None
        self.yaw_head = PositionHead(cfg.d_model, r, outputs=2) if cfg.yaw_weight > 0 else None
        loc_dim = (3 * r if self.heatmap is not None else 0) + (3 * r if self.position_head is not None else 0) + \
            (2 * r if self.yaw_head is not None else 0)
        self.location_token = nn.Linear(loc_dim, cfg.d_model) if cfg.feed_location else None
        self.tokens_per_frame = cfg.tokens_per_image + (1 if cfg.feed_location else 0)
        self.map_pos = None
        if cfg.map_pos_embedding:
            h, w = (math.ceil(s / 32) for s in cfg.image_size)  # the backbone's output stride
            self.map_pos = nn.Parameter(torch.zeros(1, cfg.d_model, h, w))
            nn.init.trunc_normal_(self.map_pos, std=0.02)
        self.num_image_tokens = cfg.history * self.tokens_per_frame
        seq = self.num_image_tokens + cfg.action_dim
        self.pos_embedding = nn.Parameter(torch.zeros(1, seq, cfg.d_model))
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.num_heads,
            cfg.ff_dim,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, cfg.num_layers, norm=nn.LayerNorm(cfg.d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(cfg.d_model, cfg.action_classes or cfg.num_bins)
        self.codec = ActionCodec.from_config(cfg)
        self.register_buffer("causal", torch.ones(seq, seq, dtype=torch.bool).triu(1), persistent=False)
        self._tokens: deque[torch.Tensor] = deque(maxlen=cfg.history)
        self._cond: torch.Tensor | None = None

    # --- network --------------------------------------------------------------------------------------------
    def tokenize(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, H, W)`` images, ``(N, D)`` instruction embeddings -> ``(N, S, d_model)`` tokens."""
        return self.encode_frames(images, cond)[0]

    def encode_frames(self, images: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """As ``tokenize``, with the grounding heads' outputs per frame: ``heatmap`` (a ``RoleHeatmap``
        output or None), ``position`` ``(N, R, 3)`` and ``yaw`` ``(N, R, 2)`` (None without their heads)."""
        grounded = self.config.grounded
        if grounded:
            fmap, fine = self.backbone(images, cond, return_fine=True)
        else:
            fmap, fine = self.backbone(images, cond), None
        fmap = self.proj(fmap)
        if self.map_pos is not None:
            fmap = fmap + self.map_pos
        tokens = self.token_learner(fmap)
        aux: dict[str, Any] = {"heatmap": None, "position": None, "yaw": None}
        if not grounded:
            return tokens, aux
        if self.heatmap is not None:
            up = F.interpolate(fmap, size=fine.shape[-2:], mode="bilinear", align_corners=False)
            aux["heatmap"] = self.heatmap(torch.cat([fine, up], dim=1))
        pooled = tokens.mean(dim=1)
        if self.position_head is not None:
            aux["position"] = self.position_head(pooled)
        if self.yaw_head is not None:
            aux["yaw"] = self.yaw_head(pooled)
        if self.location_token is not None:
            hms = [aux["heatmap"]] if aux["heatmap"] is not None else []
            loc = location_features(hms, aux["position"], aux["yaw"])
            tokens = torch.cat([tokens, self.location_token(loc)[:, None]], dim=1)
        return tokens, aux

    def action_logits(self, tokens: torch.Tensor, obs_mask: torch.Tensor) -> torch.Tensor:
        """``(B, T, S, d)`` image tokens and bool ``(B, T)`` real-frame mask -> ``(B, A, num_bins)`` (discrete
        actions: ``(B, 1, action_classes)``).

        Padded frames are hidden from every other token; each token may always attend to itself,
        so no attention row is empty.
        """
        b, a = tokens.shape[0], self.config.action_dim
        x = (
            torch.cat([tokens.flatten(1, 2), tokens.new_zeros(b, a, tokens.shape[-1])], dim=1)
            + self.pos_embedding
        )
        pad = torch.cat(
            [~obs_mask.repeat_interleave(self.tokens_per_frame, dim=1), obs_mask.new_zeros(b, a)],
            dim=1,
        )  # (B, L) True = hidden
        seq = x.shape[1]
        eye = torch.eye(seq, dtype=torch.bool, device=x.device)
        hidden = (self.causal | pad[:, None, :]) & ~eye  # (B, L, L)
        mask = hidden.repeat_interleave(self.config.num_heads, dim=0)
        out = self.transformer(x, mask=mask)
        return self.head(out[:, -a:])

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., A, num_bins)`` logits -> ``(..., A)`` actions in env units (argmax, or sampled); discrete
        actions: ``(..., 1, n)`` -> ``(..., 1)``."""
        cfg = self.config
        if cfg.sample:
            probs = (logits / cfg.temperature).softmax(-1)
            bins = torch.multinomial(probs.reshape(-1, logits.shape[-1]), 1).reshape(probs.shape[:-1])
        else:
            bins = logits.argmax(-1)
        if cfg.action_classes:
            return self.codec.from_classes(bins[..., 0])
        return self.codec.from_bins(bins, cfg.num_bins)

    # --- batches --------------------------------------------------------------------------------------------
    def _window_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        return self._window(batch)[0]

    def window_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """The current step's bin logits ``(B, A, num_bins)`` (discrete actions: ``(B, 1, n)``) on a window
        batch, with gradients: what distillation matches between two RT-1s (``vlagym.policies.distill``)."""
        return self._window_logits(batch)

    def _window(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Action logits ``(B, A, bins)`` and the grounding outputs of each window's current frame."""
        images = self._batch_images(batch)
        b, t = images.shape[:2]
        if t != self.config.history:
            raise ValueError(
                f"rt1: batch holds {t} frames per sample, config.history is {self.config.history}; "
                f"build DemoWindows with history={self.config.history}"
            )
        obs_mask = batch.get("obs_mask")
        obs_mask = torch.ones(b, t, dtype=torch.bool) if obs_mask is None else obs_mask
        cond = self.text(list(batch["instruction"]))  # (B, D)
        tokens, aux = self.encode_frames(images.flatten(0, 1), cond.repeat_interleave(t, dim=0))
        current = {k: None if v is None else
                   ({kk: vv.unflatten(0, (b, t))[:, -1] for kk, vv in v.items()} if isinstance(v, dict)
                    else v.unflatten(0, (b, t))[:, -1]) for k, v in aux.items()}
        return self.action_logits(tokens.unflatten(0, (b, t)), obs_mask.to(self.device)), current

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy over the bins of every action dimension of the current step (discrete actions: over
        the n actions of the one action token)."""
        logits, aux = self._window(batch)
        logits = logits.float()  # (B, A, bins)
        actions, mask = self._batch_actions(batch)
        if self.config.action_classes:
            target = self.codec.class_targets(actions[:, 0])[:, None]  # (B, 1)
        else:
            target = self.codec.to_bins(actions[:, 0], self.config.num_bins)  # (B, A)
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, A)
        m = mask[:, 0].float().unsqueeze(-1)
        denom = (m.sum() * self.config.action_dim).clamp_min(1.0)
        loss = (ce * m).sum() / denom
        acc = ((logits.argmax(-1) == target).float() * m).sum() / denom
        logs = {"loss": float(loss.detach()), "bin_acc": float(acc)}
        if not self.config.grounded:
            return loss, logs
        return grounding_loss(self, batch, loss, logs, [aux["heatmap"]] if aux["heatmap"] is not None else [],
                              aux["position"], aux["yaw"])

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.decode(self._window_logits(batch)).unsqueeze(1)

    @torch.no_grad()
    def locate(self, obs: dict[str, Any]) -> dict[str, Any]:
        """The grounding heads on one observation's image (see ``vlagym.policies.grounding.located``)."""
        if not self.config.grounded:
            raise ValueError("rt1.locate: this policy has no grounding heads (its grounding weights are 0)")
        frame = self._parse_obs(obs)
        _, aux = self.encode_frames(frame.image[None], self.text([frame.instruction]))
        return located(self, [aux["heatmap"]] if aux["heatmap"] is not None else [], aux["position"], aux["yaw"])

    # --- acting ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        super().reset()
        self._tokens.clear()
        self._cond = None

    # --- the per-step network -------------------------------------------------------------------------------
    def step_module(self) -> RT1Step:
        return RT1Step(self)

    def step_inputs(self, frame: _Frame) -> dict[str, torch.Tensor]:
        if self._cond is None:
            self._cond = self.text([frame.instruction])
        t = self.config.history
        past = list(self._tokens)[-(t - 1):] if t > 1 else []
        # Slots before the episode's start are masked out of every attention row but their own, so their
        # values never reach the action tokens: zeros stand in for the first frame that DemoWindows repeats.
        mask = torch.arange(t, device=self.device) >= t - 1 - len(past)
        inputs = {"image": frame.image[None], "cond": self._cond, "mask": mask[None]}
        if t > 1:
            shape = (self.tokens_per_frame, self.config.d_model)
            zeros = [self._cond.new_zeros(shape)] * (t - 1 - len(past))
            inputs["past_tokens"] = torch.stack(zeros + past)[None]
        return inputs

    def finish_step(self, outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        logits, tokens = outputs
        self._tokens.append(tokens[0])
        return self.decode(logits)  # (1, A) = (horizon, A)


class RT1Step(StepModule):
    """RT-1's decision: the current uint8 ``image`` ``(1, 3, H, W)``, the instruction embedding ``cond``
    ``(1, D)``, the real-frame ``mask`` ``(1, T)`` (oldest first, the current frame last) and, with
    ``history`` T > 1, the earlier frames' tokens ``past_tokens`` ``(1, T - 1, S, d_model)`` -> action bin
    ``logits`` ``(1, A, num_bins)`` (discrete actions: ``(1, 1, n)``) and this frame's ``tokens``
    ``(1, S, d_model)``."""

    def __init__(self, policy: RT1Policy) -> None:
        names = ("image", "cond", "mask", *(("past_tokens",) if policy.config.history > 1 else ()))
        super().__init__(policy, names, ("logits", "tokens"))

    def forward(self, image: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor, *past: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.policy
        tokens = p.tokenize(image, cond)
        window = tokens[:, None] if not past else torch.cat([past[0], tokens[:, None]], dim=1)
        return p.action_logits(window, mask), tokens
