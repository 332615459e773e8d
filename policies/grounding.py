"""Grounding heads: where the instruction's roles are, learned from the simulator's privileged labels.

Two auxiliary heads train with the behavior-cloning loss (CLIPort's and Transporter's lesson: supervise
*where* directly, and a handful of demonstrations goes a long way):

* ``RoleHeatmap``: over a language-conditioned image feature map, one heatmap per role (the object to
  move, its destination). A softmax over positions is trained with a cross-entropy against a Gaussian
  around the role's labelled pixel (``labels/<role>/<camera>/uv``), on frames where the role is visible,
  and a visibility logit per role with a binary cross-entropy against ``labels/<role>/<camera>/visible``.
  Its soft-argmax is the predicted pixel position, (column, row) in [0, 1] as the labels give it.
* ``PositionHead``: a regression of each role's 3-D position in the robot frame (``labels/<role>/pos``,
  the end-effector frame on the tabletop) from the pooled image features and proprioception, with a
  Huber loss in units of ``POSITION_SCALE``; the same head with two outputs regresses each role's yaw
  relative to the hand, folded by its symmetry (``labels/<role>/yaw``: how to turn the fingers onto a
  cube's faces, which a 64 px image barely shows).

With ``feed_location`` the predicted pixel positions, visibilities and 3-D positions join the action
head's input, so the actions read the located object rather than having to find it again.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

POSITION_SCALE = 0.1  # metres per unit of the position head's targets
HEATMAP_SIGMA = 0.75  # of the Gaussian target, in feature-map cells


class RoleHeatmap(nn.Module):
    """``(N, C, h, w)`` feature map -> heatmap logits ``(N, R, h, w)``, soft-argmax ``(N, R, 2)`` in [0, 1]
    (column, row; cell centres at ``(j + 0.5) / w``) and visibility logits ``(N, R)``."""

    def __init__(self, in_channels: int, num_roles: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, num_roles, 1))
        self.visibility = nn.Linear(in_channels, num_roles)

    def forward(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(fmap)
        n, r, h, w = logits.shape
        prob = logits.flatten(2).softmax(-1).view(n, r, h, w)
        xs = (torch.arange(w, device=fmap.device, dtype=prob.dtype) + 0.5) / w
        ys = (torch.arange(h, device=fmap.device, dtype=prob.dtype) + 0.5) / h
        uv = torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], dim=-1)
        return {"logits": logits, "uv": uv, "visible": self.visibility(fmap.mean(dim=(2, 3)))}


class PositionHead(nn.Module):
    """``(N, D)`` features -> ``outputs`` numbers per role ``(N, R, outputs)``: the 3-D position in units of
    ``POSITION_SCALE``, or (with ``outputs=2``) the folded yaw's sine and cosine."""

    def __init__(self, in_dim: int, num_roles: int, hidden: int = 128, outputs: int = 3) -> None:
        super().__init__()
        self.num_roles, self.outputs = num_roles, outputs
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, outputs * num_roles))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.shape[0], self.num_roles, self.outputs)


def location_features(heatmaps: list[dict[str, torch.Tensor]], position: torch.Tensor | None,
                      yaw: torch.Tensor | None = None) -> torch.Tensor:
    """What ``feed_location`` hands the action head: per camera and role the predicted (u, v) centred on 0
    and the visibility probability, then the predicted positions and yaws -> ``(N, F)``."""
    parts = []
    for hm in heatmaps:
        parts += [(hm["uv"] - 0.5).flatten(1), hm["visible"].sigmoid()]
    for x in (position, yaw):
        if x is not None:
            parts.append(x.flatten(1))
    return torch.cat(parts, dim=-1)


def gaussian_targets(uv: torch.Tensor, h: int, w: int, sigma: float = HEATMAP_SIGMA) -> torch.Tensor:
    """``(N, R, 2)`` pixel positions in [0, 1] -> ``(N, R, h * w)`` target distributions (sum 1)."""
    xs = (torch.arange(w, device=uv.device, dtype=uv.dtype) + 0.5)
    ys = (torch.arange(h, device=uv.device, dtype=uv.dtype) + 0.5)
    dx = xs.view(1, 1, 1, w) - (uv[..., 0] * w)[..., None, None]
    dy = ys.view(1, 1, h, 1) - (uv[..., 1] * h)[..., None, None]
    g = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2)).flatten(2)
    return g / g.sum(-1, keepdim=True).clamp_min(1e-12)


def heatmap_loss(hm: dict[str, torch.Tensor], uv: torch.Tensor, visible: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Cross-entropy of the heatmaps on visible roles and BCE of the visibility logits.

    Args:
        hm: ``RoleHeatmap`` output; uv: ``(N, R, 2)`` labels; visible: bool ``(N, R)``.
    Returns:
        (heatmap loss, visibility loss, logs with the mean pixel error of visible roles in [0, 1] units).
    """
    logits = hm["logits"]
    n, r, h, w = logits.shape
    vis = visible.float()
    # Off-image labels (not visible) have no target; clamp them so the Gaussian stays finite.
    target = gaussian_targets(uv.clamp(0.0, 1.0), h, w)
    ce = -(target * logits.flatten(2).log_softmax(-1)).sum(-1)  # (N, R)
    denom = vis.sum().clamp_min(1.0)
    loss_map = (ce * vis).sum() / denom
    loss_vis = F.binary_cross_entropy_with_logits(hm["visible"], vis)
    err = ((hm["uv"].detach() - uv).norm(dim=-1) * vis).sum() / denom
    return loss_map, loss_vis, {"uv_error": float(err)}


def position_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Huber loss of ``(N, R, 3)`` predictions against positions in metres; logs the mean error in cm."""
    t = target / POSITION_SCALE
    loss = F.smooth_l1_loss(pred, t)
    err_cm = float((pred.detach() - t).norm(dim=-1).mean() * POSITION_SCALE * 100)
    return loss, {"position_error_cm": err_cm}


def yaw_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Squared error of ``(N, R, 2)`` predicted (sin, cos) against the labels; logs the mean angle error in
    degrees of the folded angle (a cube's quarter turn spans 360 of them)."""
    loss = F.mse_loss(pred, target)
    p = torch.atan2(pred[..., 0], pred[..., 1]).detach()
    t = torch.atan2(target[..., 0], target[..., 1])
    err = torch.remainder(p - t + torch.pi, 2 * torch.pi) - torch.pi
    return loss, {"yaw_error_deg": float(err.abs().mean() * 180 / torch.pi)}


def role_label_keys(roles: tuple[str, ...], cameras: tuple[str, ...], heatmap: bool, position: bool,
                    yaw: bool = False) -> tuple[str, ...]:
    """The dataset label keys (``labels/<key>``) the heads read."""
    keys: list[str] = []
    for role in roles:
        if heatmap:
            for cam in cameras:
                keys += [f"{role}/{cam}/uv", f"{role}/{cam}/visible"]
        if position:
            keys.append(f"{role}/pos")
        if yaw:
            keys.append(f"{role}/yaw")
    return tuple(keys)


def batch_labels(batch: dict[str, Any], roles: tuple[str, ...], suffix: str, device: torch.device,
                 dtype=torch.float32) -> torch.Tensor:
    """Stack ``batch["labels/<role>/<suffix>"]`` over roles -> ``(B, R, ...)``."""
    missing = [f"labels/{r}/{suffix}" for r in roles if f"labels/{r}/{suffix}" not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; build DemoWindows with label_keys=policy.label_keys()")
    return torch.stack([batch[f"labels/{r}/{suffix}"].to(device, dtype) for r in roles], dim=1)


def grounding_loss(policy, batch: dict[str, Any], loss: torch.Tensor, logs: dict[str, float],
                   heatmaps: list[dict[str, torch.Tensor]], position: torch.Tensor | None,
                   yaw: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
    """Add the grounding losses of a policy's heads (one heatmap per camera of ``policy.image_keys()``,
    in order) to its behavior-cloning ``loss``, weighted by its config; every part goes in the logs."""
    cfg = policy.config
    dev = policy.device
    logs = {**logs, "bc_loss": logs["loss"]}
    for cam, hm in zip(policy.image_keys(), heatmaps):
        uv = batch_labels(batch, cfg.roles, f"{cam}/uv", dev)
        visible = batch_labels(batch, cfg.roles, f"{cam}/visible", dev, torch.bool)
        loss_map, loss_vis, extra = heatmap_loss({k: v.float() for k, v in hm.items()}, uv, visible)
        loss = loss + cfg.heatmap_weight * (loss_map + loss_vis)
        logs.update({f"heatmap_{cam}": float(loss_map.detach()), f"visibility_{cam}": float(loss_vis.detach()),
                     f"uv_error_{cam}": extra["uv_error"]})
    if position is not None:
        loss_pos, extra = position_loss(position.float(), batch_labels(batch, cfg.roles, "pos", dev))
        loss = loss + cfg.position_weight * loss_pos
        logs.update(position=float(loss_pos.detach()), **extra)
    if yaw is not None:
        loss_yaw, extra = yaw_loss(yaw.float(), batch_labels(batch, cfg.roles, "yaw", dev))
        loss = loss + cfg.yaw_weight * loss_yaw
        logs.update(yaw=float(loss_yaw.detach()), **extra)
    logs["loss"] = float(loss.detach())
    return loss, logs


def located(policy, heatmaps: list[dict[str, torch.Tensor]], position: torch.Tensor | None,
            yaw: torch.Tensor | None) -> dict[str, Any]:
    """What ``locate`` returns for one observation (batch of one): per camera the heatmap probabilities
    ``(R, h, w)``, pixel positions ``(R, 2)`` and visibility probabilities ``(R,)``; the positions ``(R, 3)``
    in metres and the folded yaws ``(R, 2)``; ``roles`` names the rows."""
    out: dict[str, Any] = {"roles": policy.config.roles}
    for cam, hm in zip(policy.image_keys(), heatmaps):
        logits = hm["logits"][0]
        out[cam] = {"heatmap": logits.flatten(1).softmax(-1).view_as(logits).cpu().numpy(),
                    "uv": hm["uv"][0].cpu().numpy(), "visible": hm["visible"][0].sigmoid().cpu().numpy()}
    if position is not None:
        out["position"] = (position[0] * POSITION_SCALE).cpu().numpy()
    if yaw is not None:
        out["yaw"] = yaw[0].cpu().numpy()
    return out
