"""BC-Z's configuration (see ``BCZConfig``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlagym.policies.base import LanguageConditionedConfig, _bad


@dataclass
class BCZConfig(LanguageConditionedConfig):
    """BC-Z (Jang et al. 2021): a FiLM-conditioned ResNet-18 on the current image (or a stack of the
    last ``history`` images), its pooled features with proprioception into MLP heads that predict the
    next ``horizon`` actions.

    Continuous dimensions are regressed as z-scores of the dataset's statistics with a Huber loss;
    gripper dimensions are binary logits trained with BCE; a discrete action space
    (``action_classes``) gets one categorical head per step, trained with cross-entropy. ``act``
    executes the first ``n_action_steps`` actions of each prediction (1: predict every step, as the
    paper does).
    """

    history: int = 1
    """Frames per decision, ending at the current one (1: the paper's current image only). With k > 1
    every frame goes through the same encoder and the k pooled feature vectors are concatenated, oldest
    first, before proprioception and the MLP trunk: a frame stack in feature space. Concatenation keeps
    the frames' order explicit, adds only the trunk's first layer's inputs, trains as fast per frame as
    the single-frame model and is exactly it at k = 1; a GRU would need state carried across windows.
    Slots before the episode's first frame (``obs_mask`` false) contribute zeros, in training and in
    ``act``, which keeps the last k frames' features and clears them on ``reset``. For navigation, where
    the goal leaves the camera's view as the robot turns."""
    horizon: int = 10
    """Future actions predicted per step (the paper's 10)."""
    pretrained_backbone: str | None = None
    """None (random init) or a path to a torchvision ResNet-18 state dict."""
    backbone_width: int = 64
    """Channels of ResNet-18's first stage (64: the standard network, which ``pretrained_backbone``
    needs; 32 or 16: the same topology at about 1/4 or 1/16 of the compute, for CPU budgets)."""
    pool: str = "avg"
    """How the feature map becomes a vector: "avg" (the paper's global average pooling) or
    "spatial_softmax" (keypoint coordinates; learns object positions from far fewer steps)."""
    num_keypoints: int = 32
    """Keypoints of the spatial softmax."""
    output_stride: int = 32
    """ResNet-18's output stride: 32, or 16 for a finer map (a 6x6 map at 96 px instead of 3x3)."""
    hidden_dim: int = 256
    """Width of the MLP trunk and heads."""
    num_hidden_layers: int = 2
    """Hidden layers of the MLP trunk."""
    use_proprio: bool = True
    """Feed the normalised proprioception to the MLP with the image features."""
    huber_delta: float = 1.0
    """Huber loss threshold, in standard deviations of the action statistics."""
    gripper_weight: float = 1.0
    """Weight of the gripper BCE relative to the Huber loss."""
    dropout: float = 0.0
    """Dropout in the MLP."""

    @classmethod
    def tiny_variants(cls) -> dict[str, dict[str, Any]]:
        """Test sizes (``PolicyConfig.tiny_variants``): hashed words and a 64-wide trunk; ``keypoints``
        pools an 8-wide ResNet by spatial softmax at stride 16; ``2cam`` also reads ``rgb_wrist``."""
        small = {"text_encoder": "hash", "text_dim": 32, "hidden_dim": 64, "horizon": 4}
        keypoints = {**small, "backbone_width": 8, "pool": "spatial_softmax", "num_keypoints": 8}
        return {
            "": small,
            "keypoints": {**keypoints, "output_stride": 16},
            "2cam": {**keypoints, "extra_image_keys": ("rgb_wrist",)},
        }

    def __post_init__(self) -> None:
        super().__post_init__()
        p = self.pretrained_backbone
        if p is not None and not Path(p).exists():
            raise _bad(self, "pretrained_backbone", "must be None or an existing file")
        if self.pool not in ("avg", "spatial_softmax"):
            raise _bad(self, "pool", "must be 'avg' or 'spatial_softmax'")
        if self.output_stride not in (16, 32):
            raise _bad(self, "output_stride", "must be 16 or 32")
        if p is not None and self.backbone_width != 64:
            raise _bad(self, "backbone_width", "must be 64 with a pretrained_backbone")
        for name in ("hidden_dim", "num_hidden_layers", "num_keypoints", "backbone_width"):
            if getattr(self, name) < 1:
                raise _bad(self, name, "must be >= 1")
        if self.huber_delta <= 0:
            raise _bad(self, "huber_delta", "must be > 0")
        if self.gripper_weight < 0:
            raise _bad(self, "gripper_weight", "must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise _bad(self, "dropout", "must be in [0, 1)")
        if min(self.image_size) < 32:
            raise _bad(self, "image_size", "must be >= 32 on each side (ResNet-18 downsamples by 32)")
