"""The CLIP-fusion policy's configuration (see ``CLIPConfig``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from vlagym.policies.base import PolicyConfig, _bad
from vlagym.vl.model import DEFAULT_ARCH

FUSIONS = ("early", "late", "cross")
TINY_CLIP = DEFAULT_ARCH
TEST_TOWERS: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""``clip_model_cfg`` for test-sized towers (2 layers each, 64 wide): the tests' and ``tiny_variants``'.
The vision tower's image size always comes from the config's ``image_size``."""


@dataclass
class CLIPConfig(PolicyConfig):
    """open_clip vision and text towers fused with proprioception into an action-chunk head.

    Fusion modes:
      * ``"early"``: FiLM after every vision Transformer block, conditioned on the text embedding.
      * ``"late"``: image embedding, text embedding and proprioception concatenated into an MLP.
      * ``"cross"``: learned action queries (one per predicted step) attend, through a Transformer
        decoder, to the image patch tokens, the text tokens and a proprioception token.

    Weights: ``clip_pretrained`` is an open_clip tag or file. open_clip weights cannot be installed
    offline here, so the default trains both towers from scratch (logged); a tag that fails to
    load is logged as a warning, the towers start from scratch and the policy's config records
    ``clip_pretrained=None``, which is what its checkpoint then holds.
    """

    horizon: int = 4
    """Future actions predicted per step (``act`` executes ``n_action_steps`` of them)."""
    clip_model: str = TINY_CLIP
    """open_clip architecture (``open_clip.list_models()``, or an ``hf-hub:``/``local-dir:`` source). The
    default ``vlagym-clip-tiny`` (shipped with vlagym) is a 4-layer, 192-wide ViT-16 and a 4-layer,
    128-wide text Transformer, for CPU."""
    clip_pretrained: str | None = None
    """open_clip pretrained tag (e.g. ``"openai"``) or checkpoint file; None trains from scratch."""
    pretrained_vl: str | None = None
    """A ``vlagym vl-train`` model folder (or its run folder) to start both towers from: its architecture
    (``clip_model``, ``clip_model_cfg``), normalisation and weights replace the settings above when the
    policy is built; the position embedding is resized to the env's image size."""
    clip_model_cfg: dict[str, Any] | None = None
    """Overrides of the architecture's open_clip config: each top-level key (``embed_dim``, ``vision_cfg``,
    ``text_cfg``) replaces the architecture's entry whole; the image size is always the env's."""
    image_mean: tuple[float, float, float] | None = None
    """Per-channel input mean; None takes the open_clip model's (that of its pretrained weights) when
    the policy is built, and the value is saved with it."""
    image_std: tuple[float, float, float] | None = None
    """Per-channel input std, like ``image_mean``."""
    fusion: str = "cross"
    """``"early"``, ``"late"`` or ``"cross"`` (see the class docstring)."""
    fusion_dim: int = 192
    """Width of the cross-attention decoder (cross) or of the MLP (early, late)."""
    fusion_layers: int = 2
    """Decoder layers (cross) or MLP hidden layers (early, late)."""
    fusion_heads: int = 4
    """Attention heads of the cross-attention decoder."""
    dropout: float = 0.0
    """Dropout in the fusion layers."""
    freeze_text: bool = False
    """Keep the text tower's weights fixed (from ``pretrained_vl``, open_clip weights or the random init):
    the instruction's features are then computed once per distinct instruction and cached, which on a CPU
    cuts a training step by about a quarter (the token embedding table alone holds 6 of the tiny model's
    9 M weights). The vision tower and the fusion still train."""
    use_proprio: bool = True
    """Give the fusion the normalised proprioception."""
    contrastive_weight: float = 0.1
    """Weight of a CLIP image-instruction contrastive loss over the batch (samples sharing an
    instruction are all positives). Used by late and cross fusion; early fusion's image features
    see the text, so it skips it."""
    huber_delta: float = 1.0
    """Huber loss threshold, in standard deviations of the action statistics."""
    gripper_weight: float = 1.0
    """Weight of the gripper BCE relative to the Huber loss."""

    @classmethod
    def tiny_variants(cls) -> dict[str, dict[str, Any]]:
        """Test sizes (``PolicyConfig.tiny_variants``): ``TEST_TOWERS`` and a 64-wide head, one variant
        per fusion mode."""
        small = {"clip_model_cfg": copy.deepcopy(TEST_TOWERS), "fusion_dim": 64, "horizon": 2}
        return {
            "early": {"fusion": "early", **small},
            "late": {"fusion": "late", **small},
            "cross": {"fusion": "cross", **small, "fusion_heads": 4, "fusion_layers": 1},
        }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grounded:
            raise _bad(self, "heatmap_weight" if self.heatmap_weight else "position_weight",
                       "must be 0: the CLIP-fusion policy has no grounding heads yet (bcz has)")
        if self.extra_image_keys:
            raise _bad(self, "extra_image_keys", "must be empty: the CLIP-fusion policy reads one camera (image_key)")
        if self.history != 1:
            raise _bad(self, "history", "must be 1 (the CLIP policy reads the current image only)")
        if self.fusion not in FUSIONS:
            raise _bad(self, "fusion", f"must be one of {FUSIONS}")
        for name in ("fusion_dim", "fusion_layers", "fusion_heads"):
            if getattr(self, name) < 1:
                raise _bad(self, name, "must be >= 1")
        if self.fusion == "cross" and self.fusion_dim % self.fusion_heads:
            raise _bad(self, "fusion_heads", f"must divide fusion_dim ({self.fusion_dim})")
        if not 0.0 <= self.dropout < 1.0:
            raise _bad(self, "dropout", "must be in [0, 1)")
        if self.contrastive_weight < 0 or self.gripper_weight < 0:
            raise _bad(
                self,
                "contrastive_weight" if self.contrastive_weight < 0 else "gripper_weight",
                "must be >= 0",
            )
        if self.huber_delta <= 0:
            raise _bad(self, "huber_delta", "must be > 0")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in value)
                setattr(self, name, value)
                if len(value) != 3 or (name == "image_std" and min(value) <= 0):
                    raise _bad(self, name, "must be 3 numbers (stds > 0) or None")
        if self.clip_model_cfg is not None and not isinstance(self.clip_model_cfg, dict):
            raise _bad(self, "clip_model_cfg", "must be a dict of open_clip config overrides or None")
