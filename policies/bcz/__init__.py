"""BC-Z (Jang et al. 2021): FiLM-ResNet-18 on the instruction embedding, MLP heads for the next 10 actions."""

from vlagym.policies.bcz.configuration_bcz import BCZConfig
from vlagym.policies.bcz.modeling_bcz import BCZPolicy

__all__ = ["BCZConfig", "BCZPolicy"]
