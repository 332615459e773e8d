"""Vision-language policies (RT-1, BC-Z, CLIP fusion), their encoders and the training windows.

``make_policy(name, observation_space, action_space, stats, **overrides)`` builds one by name;
``load_policy(dir)`` loads any saved one. Each policy registers itself in its modeling file
(``@register_policy("bcz")``, ``registry.py``); importing this package imports every policy folder's
modeling modules and the ``vlagym.policies`` entry points, so ``policy_names()`` lists them all. The
heavy model libraries (timm, open_clip, transformers) still load only when a policy is first built.
"""

from vlagym.policies.factory import config_from_spaces, load_policy, make_policy
from vlagym.policies.registry import config_class, discover_policies, policy_class, policy_names, register_policy

discover_policies()

__all__ = ["config_class", "config_from_spaces", "load_policy", "make_policy", "policy_class", "policy_names",
           "register_policy"]
