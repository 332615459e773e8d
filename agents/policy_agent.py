"""A trained policy as an agent: ``act(obs, info)`` in env units, one thread, no gradients.

Two kinds of checkpoint load here: vlagym policies (``config.json`` + ``model.safetensors``, or a BC
training run) through ``PolicyAgent``, and stable-baselines3 models (a ``.zip`` saved by SB3, or a
``vlagym rl`` run folder holding ``model.zip``) through ``SB3Agent``. ``PolicyAgent.load`` picks.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlagym.core.env_args import env_id_of

SB3_MODEL_NAME = "model.zip"


def is_sb3_model(path: str | os.PathLike) -> bool:
    """A zip file with SB3's ``data`` member (what ``model.save`` writes)."""
    p = Path(path)
    if not (p.is_file() and zipfile.is_zipfile(p)):
        return False
    with zipfile.ZipFile(p) as z:
        return "data" in z.namelist()


def resolve_policy_dir(path: str | os.PathLike) -> Path:
    """Accept a saved policy folder, a training run folder (uses its best checkpoint), an SB3 model zip, or
    a ``vlagym rl`` run folder (uses its ``model.zip``). SB3 models resolve to the zip file itself."""
    p = Path(path)
    if p.suffix == ".zip":
        if not p.exists():
            raise FileNotFoundError(f"SB3 model {p} does not exist")
        if not is_sb3_model(p):
            raise ValueError(f"{p} is not a stable-baselines3 model (a zip holding 'data')")
        return p
    if (p / "config.json").exists():
        return p
    for sub in ("best", "checkpoint/policy"):
        if (p / sub / "config.json").exists():
            return p / sub
    if is_sb3_model(p / SB3_MODEL_NAME):
        return p / SB3_MODEL_NAME
    raise FileNotFoundError(f"no policy checkpoint at {p} (expected config.json and model.safetensors there, "
                            f"a training run folder with best/, an SB3 model .zip, or an RL run folder with "
                            f"{SB3_MODEL_NAME})")


def policy_env_args(path: str | os.PathLike) -> tuple[str | None, dict[str, Any], Path | None]:
    """``(env id, env kwargs minus the task, env_args.json path)`` a saved policy was trained with; ``(None,
    {}, None)`` when it has no env_args.json.

    For an SB3 zip, env_args.json sits beside it or in the run folder above (``checkpoints/*.zip``)."""
    r = resolve_policy_dir(path)
    candidates = [r / "env_args.json"] if r.is_dir() else [r.parent / "env_args.json",
                                                           r.parent.parent / "env_args.json"]
    p = next((c for c in candidates if c.exists()), None)
    if p is None:
        return None, {}, None
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("env_kwargs", {}), dict):
        raise ValueError(f"{p}: expected an object with an 'env_kwargs' object, got {type(data).__name__}")
    kwargs = {k: v for k, v in data.get("env_kwargs", {}).items() if k != "task"}
    return env_id_of(data), kwargs, p


def policy_env_kwargs(path: str | os.PathLike) -> dict[str, Any]:
    """The env kwargs a saved policy was trained with (from its env_args.json), minus the task."""
    return policy_env_args(path)[1]


class PolicyAgent:
    """Wraps a policy loaded with ``vlagym.policies.load_policy``."""

    def __init__(self, policy, threads: int | None = 1) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.policy = policy.eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", trust_pickle: bool | None = None
             ) -> PolicyAgent | SB3Agent:
        """A vlagym policy as ``PolicyAgent``; an SB3 model (zip or RL run folder) as ``SB3Agent``, loaded
        without unpickling unless ``trust_pickle`` (``vlagym.agents.safe_load``)."""
        resolved = resolve_policy_dir(path)
        if resolved.suffix == ".zip":
            return SB3Agent.load(resolved, device=device, trust_pickle=trust_pickle)
        from vlagym.policies import load_policy

        return cls(load_policy(resolved).to(device))

    def reset(self) -> None:
        self.policy.reset()

    @torch.no_grad()
    def act(self, obs: dict[str, Any], info: dict[str, Any] | None = None) -> np.ndarray:
        return self.policy.act(obs)

    def locate(self, obs: dict[str, Any]) -> dict[str, Any]:
        """The policy's grounding heads on ``obs`` (``BCZPolicy.locate``): per camera heatmaps and pixels."""
        if not getattr(self.policy.config, "grounded", False) or not hasattr(self.policy, "locate"):
            raise ValueError(f"this {self.policy.name} policy has no grounding heads to draw (train it with "
                             "policy.heatmap_weight > 0)")
        return self.policy.locate(obs)


def sb3_algorithm(path: str | os.PathLike):
    """The SB3 algorithm class (PPO or SAC) that saved the model zip at ``path``."""
    from stable_baselines3 import PPO, SAC

    from vlagym.agents.safe_load import sb3_algorithm_name

    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read("data"))
    return PPO if sb3_algorithm_name(data, path) == "ppo" else SAC


class SB3Agent:
    """A stable-baselines3 model acting on raw vlagym observations: each observation goes through the
    ``SB3Wrapper`` transform the model was trained with (its ``InstructionEncoder`` is stored in the
    model's ``features_extractor_kwargs``), then ``model.predict(deterministic=True)``."""

    def __init__(self, model, threads: int | None = 1) -> None:
        from gymnasium import spaces

        from vlagym.policies.sb3_env import InstructionEncoder

        if threads:
            torch.set_num_threads(threads)
        self.model = model
        kwargs = (model.policy_kwargs or {}).get("features_extractor_kwargs", {})
        self.instruction = InstructionEncoder.from_dict(kwargs.get("instruction"))
        self.space = model.observation_space
        self.discrete = isinstance(model.action_space, spaces.Discrete)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", trust_pickle: bool | None = None) -> SB3Agent:
        """Its cloudpickled entries rebuilt, not unpickled (``vlagym.agents.safe_load.load_sb3``); with
        ``trust_pickle`` (or ``--trust-pickle``), SB3's own load after a warning."""
        from vlagym.agents.safe_load import load_sb3

        return cls(load_sb3(path, sb3_algorithm(path), device=device, trust_pickle=trust_pickle))

    def reset(self) -> None:
        pass

    def observation(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        from vlagym.policies.sb3_env import sb3_observation

        return sb3_observation(obs, self.space, self.instruction)

    def act(self, obs: dict[str, Any], info: dict[str, Any] | None = None):
        action, _ = self.model.predict(self.observation(obs), deterministic=True)
        return int(action) if self.discrete else np.asarray(action, dtype=np.float32)
