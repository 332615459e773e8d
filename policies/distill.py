"""Distillation: a student policy learns a frozen teacher's actions (Hinton et al., 2015).

BC training (``vlagym.policies.train``) with ``TrainConfig.teacher`` set: on every batch the teacher, in eval
mode and without gradients, predicts on the same windows the student sees (augmentation included), and the
student's target is the teacher's action chunk instead of the dataset's label. The states come from the
dataset and, with ``vlagym dagger`` on a distillation run, from the student's own rollouts, which the teacher
labels at every retraining (on-policy distillation; the expert's labels there serve only the
``1 - distill_weight`` share).

* Targets: ``teacher.predict(batch)`` gives ``(B, H_t, A)`` actions in env units; the student (horizon
  ``H_s``) is supervised on the first ``min(H_t, H_s)`` steps and the rest are masked, so an RT-1 teacher
  (horizon 1) trains only a BC-Z student's first step. The teacher's plan is defined at every state, so past
  an episode's end and at DAgger states (where the dataset masks all but step t) its steps still count. The
  student trains with its own loss on them (BC-Z: Huber on z-scores and gripper BCE; RT-1: bin
  cross-entropy), so any teacher and student of one env pair up.
* Soft bins: where teacher and student are both RT-1 with the same bins (``num_bins``, ``action_classes``
  and the bins' value range, i.e. the same action statistics), the teacher term is instead
  ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over each action dimension's bins, at
  ``T = distill_temperature``: the teacher's whole distribution, not only its argmax.
* Mixing: the loss is ``w * teacher term + (1 - w) * the student's BC loss on the dataset's labels``
  (``w = distill_weight``; 1.0, the default, is the teacher alone and one student forward per batch).
* Windows: ``DemoWindows`` loads what both read, the union of their cameras and the longer history; each
  policy sees its own last ``history`` frames (``window_view``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vlagym.policies.base import Policy

log = logging.getLogger(__name__)

TIME_KEYS = ("obs_mask", "proprio")
"""Batch entries with a time axis (besides the cameras), cut to each policy's history."""
SHAPE_FIELDS = ("image_size", "proprio_dim", "action_dim", "action_classes", "action_low", "action_high")
"""Config fields a teacher and its student must share: they act in one env."""


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> Policy:
    """The frozen teacher at ``path`` (a policy folder, or a training run folder: its best), in eval mode with
    no gradients. An SB3 model, a folder without a policy, or an ONNX Runtime policy is refused, naming it."""
    from vlagym.policies.compress.api import check_teacher
    from vlagym.policies.factory import load_policy

    folder = check_teacher(path, purpose="distillation")
    teacher = load_policy(folder)
    if not isinstance(teacher, Policy):
        raise ValueError(f"teacher {folder} is a {type(teacher).__name__} (an ONNX Runtime backend); distillation "
                         f"runs the teacher in torch: pass its float teacher "
                         f"({getattr(teacher, 'onnx_path', folder)} was exported from one) instead")
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def check_pair(teacher: Policy, student: Policy) -> None:
    """Refuse a teacher and a student that act in different envs (image size, proprio, action space)."""
    t, s = teacher.config, student.config
    diff = [f"{f}: teacher {getattr(t, f)!r}, student {getattr(s, f)!r}" for f in SHAPE_FIELDS
            if _plain(getattr(t, f)) != _plain(getattr(s, f))]
    if diff:
        raise ValueError(f"the teacher ({teacher.name}) and the student ({student.name}) act in different envs "
                         f"({'; '.join(diff)}); distill on data from the teacher's env")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def soft_bins(teacher: Policy, student: Policy) -> bool:
    """Whether the two policies' action bins mean the same actions, so the student can match the teacher's bin
    distributions: both expose ``window_logits`` (RT-1) with equal ``num_bins``, ``action_classes`` and bin
    range (the codecs' min/max from the action statistics)."""
    if not (hasattr(teacher, "window_logits") and hasattr(student, "window_logits")):
        return False
    t, s = teacher.config, student.config
    if getattr(t, "num_bins", None) != getattr(s, "num_bins", None) or t.action_classes != s.action_classes:
        return False
    tc, sc = teacher.codec, student.codec
    return bool(torch.allclose(tc.amin.cpu(), sc.amin.cpu()) and torch.allclose(tc.amax.cpu(), sc.amax.cpu()))


def window_view(batch: dict[str, Any], history: int, image_keys: tuple[str, ...]) -> dict[str, Any]:
    """``batch`` with its last ``history`` frames of every camera in ``image_keys``, ``obs_mask`` and
    ``proprio`` (the other entries as they are)."""
    cut = set(TIME_KEYS) | set(image_keys)
    return {k: v[:, -history:] if k in cut and torch.is_tensor(v) else v for k, v in batch.items()}


def teacher_targets(teacher: Policy, batch: dict[str, Any], horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's action chunk as a ``horizon``-step target: actions ``(B, horizon, A)`` in env units and
    the bool mask ``(B, horizon)`` of the steps the teacher planned (steps beyond its horizon repeat its last
    one and are masked)."""
    with torch.no_grad():
        actions = teacher.predict(batch).float()  # (B, H_t, A)
    b, h_t = actions.shape[:2]
    if h_t < horizon:
        actions = torch.cat([actions, actions[:, -1:].expand(b, horizon - h_t, actions.shape[2])], dim=1)
    mask = torch.arange(horizon, device=actions.device)[None].expand(b, horizon) < h_t
    return actions[:, :horizon], mask


def bin_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` averaged over samples and action dimensions;
    logits ``(B, A, bins)``. The ``T^2`` keeps the gradient's scale independent of ``T`` (Hinton et al.)."""
    t = temperature
    s = F.log_softmax(student_logits.float() / t, dim=-1)
    p = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(s, p, log_target=True, reduction="none").sum(-1)  # (B, A)
    return kl.mean() * t * t


class Distiller:
    """The distillation loss of one teacher for one student (see the module docstring)."""

    def __init__(self, teacher: Policy, student: Policy, weight: float = 1.0, temperature: float = 2.0) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"distill_weight must lie in [0, 1] (1: the teacher's actions only), got {weight!r}")
        if temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {temperature!r}")
        check_pair(teacher, student)
        self.teacher, self.weight, self.temperature = teacher, weight, temperature
        self.soft = soft_bins(teacher, student)
        self.student_window = student.window()
        self.student_keys = student.image_keys()
        if hasattr(teacher, "window_logits") and hasattr(student, "window_logits") and not self.soft:
            log.info("distill: the teacher's and student's RT-1 bins differ (num_bins or action statistics); "
                     "the student learns the teacher's actions, not its bin distributions")

    @classmethod
    def load(cls, path: str | Path, student: Policy, device: str | torch.device = "cpu", weight: float = 1.0,
             temperature: float = 2.0) -> Distiller:
        return cls(load_teacher(path, device), student, weight, temperature)

    def history(self) -> int:
        """Frames per window ``DemoWindows`` must load: the longer of the two histories."""
        return max(self.teacher.window()[0], self.student_window[0])

    def image_keys(self) -> tuple[str, ...]:
        """Cameras ``DemoWindows`` must load: the student's, then the teacher's others."""
        return (*self.student_keys, *(k for k in self.teacher.image_keys() if k not in self.student_keys))

    def loss(self, student: Policy, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """``w * teacher term + (1 - w) * student.loss`` on one window batch -> (scalar loss, floats to log)."""
        t_view = window_view(batch, self.teacher.window()[0], self.teacher.image_keys())
        s_view = window_view(batch, self.student_window[0], self.student_keys)
        logs: dict[str, float] = {}
        if self.soft:
            with torch.no_grad():
                t_logits = self.teacher.window_logits(t_view)
            s_logits = student.window_logits(s_view)
            term = bin_kl(s_logits, t_logits, self.temperature)
            logs["teacher_bin_agreement"] = float((s_logits.argmax(-1) == t_logits.argmax(-1)).float().mean())
        else:
            actions, mask = teacher_targets(self.teacher, t_view, self.student_window[1])
            term, student_logs = student.loss({**s_view, "actions": actions, "action_mask": mask})
            logs.update({f"teacher_{k}": v for k, v in student_logs.items()})
        logs["distill_loss"] = float(term.detach())
        loss = term
        if self.weight < 1.0:
            bc, bc_logs = student.loss(s_view)
            loss = self.weight * term + (1.0 - self.weight) * bc
            logs.update({f"data_{k}": v for k, v in bc_logs.items()})
        logs["loss"] = float(loss.detach())
        return loss, logs
