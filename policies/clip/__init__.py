"""CLIP fusion: open_clip vision and text towers, fused early (FiLM), late (concat) or by cross-attention."""

from vlagym.policies.clip.configuration_clip import CLIPConfig
from vlagym.policies.clip.modeling_clip import CLIPPolicy

__all__ = ["CLIPConfig", "CLIPPolicy"]
