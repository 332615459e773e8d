"""Vision-language policies (RT-1, BC-Z, CLIP fusion), their encoders and the training windows.

``make_policy(name, observation_space, action_space, stats, **overrides)`` builds one by name;
``load_policy(dir)`` loads any saved one. Importing this package stays light: the model modules
(torch vision, timm, open_clip, transformers) load when a policy is first built.
"""

from vlagym.policies.factory import POLICY_NAMES, config_from_spaces, load_policy, make_policy, policy_classes

__all__ = ["POLICY_NAMES", "config_from_spaces", "load_policy", "make_policy", "policy_classes"]
