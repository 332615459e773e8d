"""RT-1 (Brohan et al. 2022): FiLM-EfficientNet tokens, TokenLearner, causal Transformer, binned actions."""

from vlagym.policies.rt1.configuration_rt1 import RT1Config
from vlagym.policies.rt1.modeling_rt1 import RT1Policy

__all__ = ["RT1Config", "RT1Policy"]
