"""Between env units and what the networks see or predict.

Every statistic here comes from the policy's config (which ``save_pretrained`` writes to
config.json), so the buffers are not persistent: a loaded policy rebuilds them from its config
and acts in env units with no other file.

* ``ProprioNormalizer``: ``(p - mean) / std``.
* ``ActionCodec``: continuous dimensions as z-scores (BC-Z, CLIP fusion), gripper dimensions as
  binary targets, and RT-1's 256 uniform bins per dimension over the data's [min, max]; a
  ``Discrete(n)`` action as its class index (no statistics touch it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# A dimension that never moves in the data (min == max, e.g. a gripper always closed) has std 0:
# it is floored to MIN_STD, which keeps its targets exactly 0. A std of 0 on a dimension that moves
# is a corrupt stats.json, refused where datasets are loaded (``data.windows.check_stats``).
MIN_STD = 1e-6


def _tensor(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32)


def check_finite(stats: dict[str, list[float]], what: str, fields: tuple[str, ...]) -> None:
    """Refuse non-finite statistics and negative stds (a NaN here would make every target NaN)."""
    for name in fields:
        x = _tensor(stats[name]).reshape(-1)
        bad = (~torch.isfinite(x)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"{what} statistics: {name}[{i}] = {float(x[i])} is not finite")
        if name == "std" and (x < 0).any():
            i = int((x < 0).nonzero()[0])
            raise ValueError(f"{what} statistics: std[{i}] = {float(x[i])} is negative")


class ProprioNormalizer(nn.Module):
    """``(..., P)`` proprioception to z-scores with the config's proprio statistics."""

    def __init__(self, stats: dict[str, list[float]]) -> None:
        super().__init__()
        check_finite(stats, "proprio", ("mean", "std"))
        self.register_buffer("mean", _tensor(stats["mean"]), persistent=False)
        self.register_buffer("std", _tensor(stats["std"]).clamp_min(MIN_STD), persistent=False)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return (proprio - self.mean) / self.std


class ActionCodec(nn.Module):
    """Encodes env-unit actions into training targets and decodes predictions back.

    Args:
        stats: action statistics with ``mean``, ``std``, ``min``, ``max`` per dimension.
        low, high: the action space's bounds; decoded actions are clipped to them.
        gripper_dims: dimensions that are binary open/close commands.
        gripper_threshold: a gripper value >= this counts as "closed" (target 1).
        num_classes: n for a ``Discrete(n)`` space (one action dimension, actions ``low .. low + n - 1``);
            0 for a continuous one.
    """

    @classmethod
    def from_config(cls, cfg) -> ActionCodec:
        """The codec a policy config describes (its action stats, bounds and gripper dimensions)."""
        return cls(cfg.stats["actions"], list(cfg.action_low), list(cfg.action_high), cfg.gripper_dims,
                   cfg.gripper_threshold, cfg.action_classes)

    def __init__(
        self,
        stats: dict[str, list[float]],
        low: list[float],
        high: list[float],
        gripper_dims: tuple[int, ...] = (),
        gripper_threshold: float = 0.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        dim = len(low)
        if num_classes and (dim != 1 or gripper_dims):
            raise ValueError(f"discrete actions ({num_classes} classes) have one dimension and no gripper, got "
                             f"{dim} dimensions and gripper_dims={tuple(gripper_dims)}")
        self.action_dim = dim
        self.num_classes = int(num_classes)
        self.gripper_dims = tuple(gripper_dims)
        self.continuous_dims = tuple(i for i in range(dim) if i not in self.gripper_dims)
        self.gripper_threshold = float(gripper_threshold)
        check_finite(stats, "action", ("mean", "std", "min", "max"))
        amin, amax = _tensor(stats["min"]), _tensor(stats["max"])
        # A constant dimension gets a tiny range so binning stays defined (it decodes to that constant).
        amax = torch.where(amax - amin < MIN_STD, amin + MIN_STD, amax)
        for name, value in (
            ("mean", _tensor(stats["mean"])),
            ("std", _tensor(stats["std"]).clamp_min(MIN_STD)),
            ("amin", amin),
            ("amax", amax),
            ("low", _tensor(low)),
            ("high", _tensor(high)),
            ("cont_idx", torch.tensor(self.continuous_dims, dtype=torch.long)),
            ("grip_idx", torch.tensor(self.gripper_dims, dtype=torch.long)),
        ):
            self.register_buffer(name, value, persistent=False)

    @property
    def num_continuous(self) -> int:
        return len(self.continuous_dims)

    @property
    def num_gripper(self) -> int:
        return len(self.gripper_dims)

    # --- continuous dims + gripper logits (BC-Z, CLIP fusion) ----------------------------------------------
    def continuous_targets(self, actions: torch.Tensor) -> torch.Tensor:
        """``(..., A)`` env units -> ``(..., Ac)`` z-scores of the continuous dimensions."""
        idx = self.cont_idx
        return (actions[..., idx] - self.mean[idx]) / self.std[idx]

    def gripper_targets(self, actions: torch.Tensor) -> torch.Tensor:
        """``(..., A)`` env units -> ``(..., Ag)`` float 0/1 (1 = closed)."""
        return (actions[..., self.grip_idx] >= self.gripper_threshold).float()

    def decode(self, continuous: torch.Tensor, gripper_logits: torch.Tensor) -> torch.Tensor:
        """``(..., Ac)`` z-scores and ``(..., Ag)`` logits -> ``(..., A)`` env units within bounds.

        A gripper dimension decodes to the space's high bound when its logit is > 0, else its low bound.
        """
        continuous = continuous.float()
        out = continuous.new_zeros((*continuous.shape[:-1], self.action_dim))
        idx = self.cont_idx
        out[..., idx] = continuous * self.std[idx] + self.mean[idx]
        if self.num_gripper:
            g = self.grip_idx
            out[..., g] = torch.where(gripper_logits > 0, self.high[g], self.low[g])
        return torch.maximum(torch.minimum(out, self.high), self.low)

    def chunk_loss(
        self,
        continuous: torch.Tensor,
        gripper_logits: torch.Tensor,
        actions: torch.Tensor,
        mask: torch.Tensor,
        huber_delta: float = 1.0,
        gripper_weight: float = 1.0,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Huber loss on continuous z-scores plus BCE on gripper logits, over real (unpadded) steps.

        Args:
            continuous: ``(B, H, Ac)``; gripper_logits: ``(B, H, Ag)``; actions: ``(B, H, A)`` env units;
            mask: bool ``(B, H)``.
        """
        continuous, gripper_logits = continuous.float(), gripper_logits.float()  # autocast may give bf16
        m = mask.unsqueeze(-1).float()
        steps = m.sum().clamp_min(1.0)
        huber = F.huber_loss(
            continuous, self.continuous_targets(actions), reduction="none", delta=huber_delta
        )
        huber = (huber * m).sum() / (steps * max(self.num_continuous, 1))
        loss, logs = huber, {"huber": float(huber.detach())}
        if self.num_gripper:
            target = self.gripper_targets(actions)
            bce = F.binary_cross_entropy_with_logits(gripper_logits, target, reduction="none")
            bce = (bce * m).sum() / (steps * self.num_gripper)
            acc = (((gripper_logits > 0).float() == target).float() * m).sum() / (steps * self.num_gripper)
            loss = loss + gripper_weight * bce
            logs.update(gripper_bce=float(bce.detach()), gripper_acc=float(acc))
        logs["loss"] = float(loss.detach())
        return loss, logs

    # --- RT-1 bins ------------------------------------------------------------------------------------------
    def to_bins(self, actions: torch.Tensor, num_bins: int) -> torch.Tensor:
        """``(..., A)`` env units -> long ``(..., A)`` in [0, num_bins), uniform over the data's range."""
        unit = ((actions - self.amin) / (self.amax - self.amin)).clamp(0.0, 1.0)
        return torch.round(unit * (num_bins - 1)).long()

    def from_bins(self, bins: torch.Tensor, num_bins: int) -> torch.Tensor:
        """Inverse of ``to_bins`` (bin ``k`` decodes to ``min + k / (num_bins - 1) * (max - min)``)."""
        out = self.amin + bins.float() / (num_bins - 1) * (self.amax - self.amin)
        return torch.maximum(torch.minimum(out, self.high), self.low)

    # --- discrete actions (Discrete(n)) --------------------------------------------------------------------
    def class_targets(self, actions: torch.Tensor) -> torch.Tensor:
        """``(..., 1)`` env-unit discrete actions -> long ``(...)`` class indices in [0, n).

        Raises ``ValueError`` on a label that is not one of the n actions (a continuous dataset fed to a
        discrete policy, or the wrong env's data), which cross-entropy would otherwise report obscurely."""
        k = actions[..., 0].float() - self.low[0]
        idx = torch.round(k).long()
        bad = (idx < 0) | (idx >= self.num_classes) | ((k - idx).abs() > 1e-3)
        if bad.any():
            value = float(actions[..., 0][bad][0])
            raise ValueError(f"action label {value:g} is not one of the {self.num_classes} discrete actions "
                             f"{float(self.low[0]):g}..{float(self.high[0]):g}; is the dataset from the "
                             "env's discrete action mode?")
        return idx

    def from_classes(self, idx: torch.Tensor) -> torch.Tensor:
        """Long ``(...)`` class indices -> ``(..., 1)`` float env-unit actions."""
        return (self.low[0] + idx.float()).unsqueeze(-1)

    def decode_classes(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., n)`` logits -> ``(..., 1)`` env-unit actions: the most likely class (greedy)."""
        return self.from_classes(logits.argmax(-1))

    def class_loss(self, logits: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of ``(B, H, n)`` logits against ``(B, H, 1)`` env-unit discrete actions over the real
        (unpadded) steps of bool ``mask`` ``(B, H)``; logs ``ce``, ``class_acc`` and ``loss``."""
        logits = logits.float()  # autocast may give bf16
        target = self.class_targets(actions)
        ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(target)
        m = mask.float()
        steps = m.sum().clamp_min(1.0)
        loss = (ce * m).sum() / steps
        acc = ((logits.argmax(-1) == target).float() * m).sum() / steps
        return loss, {"ce": float(loss.detach()), "class_acc": float(acc), "loss": float(loss.detach())}
