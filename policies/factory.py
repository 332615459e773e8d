"""Policies by name: ``make_policy(name, observation_space, action_space, stats, **kw)`` for any name in
``policy_names()`` and ``load_policy(dir)`` for any saved policy, both through ``vlagym.policies.registry``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from vlagym.policies.base import CONFIG_NAME, WEIGHTS_NAME, Policy, PolicyConfig, read_config
from vlagym.policies.registry import config_class, policy_class, policy_names

logger = logging.getLogger(__name__)


def config_from_spaces(
    name: str,
    observation_space: spaces.Dict,
    action_space: spaces.Space,
    stats: dict | None = None,
    **overrides: Any,
) -> PolicyConfig:
    """The policy's default config with the env's shapes and bounds, the dataset's statistics and
    any field overrides."""
    cls = config_class(name)
    discrete = isinstance(action_space, spaces.Discrete)
    if not discrete and (not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1):
        raise ValueError(f"{name} needs a 1-D Box or a Discrete action space, got {action_space}")
    if not isinstance(observation_space, spaces.Dict):
        raise ValueError(f"{name} needs a Dict observation space, got {observation_space}")
    image_key = overrides.get("image_key", "rgb")
    extra_keys = tuple(overrides.get("extra_image_keys", ()))
    missing = [k for k in (image_key, *extra_keys, "instruction", "proprio") if k not in observation_space.spaces]
    if missing:
        raise ValueError(
            f"observation space lacks {missing}; it has {sorted(observation_space.spaces)} "
            "(policies need images, so make the env with obs_mode='rgb')"
        )
    image, proprio = observation_space[image_key], observation_space["proprio"]
    if len(image.shape) != 3 or image.shape[-1] != 3:
        raise ValueError(f"observation {image_key!r} must be H x W x 3, got shape {image.shape}")
    for key in extra_keys:
        if observation_space[key].shape != image.shape:
            raise ValueError(f"camera {key!r} has shape {observation_space[key].shape}, {image_key!r} has "
                             f"{image.shape}; every camera of a policy must have the same size")
    fields = {"image_size": tuple(int(s) for s in image.shape[:2]), "proprio_dim": int(np.prod(proprio.shape))}
    if discrete:  # one categorical action: class k is the env's action start + k
        n, start = int(action_space.n), int(action_space.start)
        fields.update(action_dim=1, action_classes=n, action_low=(float(start),),
                      action_high=(float(start + n - 1),), gripper_dims=())
    else:
        fields.update(action_dim=int(action_space.shape[0]),
                      action_low=tuple(float(v) for v in action_space.low),
                      action_high=tuple(float(v) for v in action_space.high))
    if stats is None:
        logger.warning(
            "make_policy(%r): no dataset statistics given; %s and leaving proprioception unnormalised",
            name,
            "discrete actions need none" if discrete else "normalising actions by the action space's bounds",
        )
    elif "proprio" not in stats and "actions" in stats:
        logger.info(
            "make_policy(%r): statistics hold no proprio entry; proprioception stays unnormalised", name
        )
    default_grip = next(f.default for f in dataclasses.fields(cls) if f.name == "gripper_dims")
    if not discrete and "gripper_dims" not in overrides and any(d >= fields["action_dim"] for d in default_grip):
        # The default names the tabletop Panda's gripper; an env without that dimension has none.
        logger.info(
            "make_policy(%r): %d-d actions, so no gripper dimensions (pass gripper_dims= to set some)",
            name,
            fields["action_dim"],
        )
        fields["gripper_dims"] = ()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}; fields are {sorted(names)}")
    return cls(**{**fields, "stats": stats, **overrides})


def make_policy(
    name: str,
    observation_space: spaces.Dict,
    action_space: spaces.Space,
    stats: dict | None = None,
    **overrides: Any,
) -> Policy:
    """Build a policy by name for an env's spaces.

    Args:
        name: a registered policy (``policy_names()``: ``"rt1"``, ``"bcz"``, ``"clip"``, ...).
        observation_space, action_space: the env's spaces (image size, proprio length, action bounds); a
            ``Discrete(n)`` action space gives a policy with a categorical head (``config.action_classes``).
        stats: a dataset's stats.json (``{"actions": ..., "proprio": ...}``), or
            ``DemoWindows.action_stats()`` (actions only).
        **overrides: config fields, e.g. ``text_encoder="hash"``, ``fusion="late"``.
    """
    cls = policy_class(name)
    return cls(config_from_spaces(name, observation_space, action_space, stats, **overrides))


def check_pretrained(directory: str | Path) -> None:
    """Refuse, without building the model, a saved policy whose config.json is not valid JSON, names no known
    type, or whose weights file is missing or truncated (safetensors checks the header covers the file)."""
    from safetensors import SafetensorError, safe_open

    path = Path(directory) / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; is {directory} a policy saved with save_pretrained?")
    kind = read_config(path).get("type")
    if kind not in policy_names():
        raise ValueError(f"{path}: 'type' is {kind!r}, not a registered policy ({', '.join(policy_names())})")
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found; is {directory} a policy saved with save_pretrained?")
    try:
        with safe_open(str(weights), framework="pt"):
            pass
    except SafetensorError as e:
        raise ValueError(f"{weights}: cannot read the weights ({e}); the file is truncated or corrupt") from e


def load_policy(directory: str | Path, device: str | torch.device = "cpu") -> Policy:
    """Load any policy saved with ``save_pretrained``, dispatching on config.json's ``type``; a compressed one
    (``compression.json`` beside it) through ``vlagym.policies.compress.load_compressed``."""
    check_pretrained(directory)
    if (Path(directory) / "compression.json").exists():
        from vlagym.policies.compress.api import load_compressed

        return load_compressed(directory, device=device)
    kind = read_config(Path(directory) / CONFIG_NAME)["type"]
    return policy_class(kind).from_pretrained(directory, device=device)
