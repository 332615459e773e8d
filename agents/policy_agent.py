"""A trained policy as an agent: ``act(obs, info)`` in env units, one thread, no gradients."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


def resolve_policy_dir(path: str | os.PathLike) -> Path:
    """Accept a saved policy folder, or a training run folder (uses its best checkpoint)."""
    p = Path(path)
    if (p / "config.json").exists():
        return p
    for sub in ("best", "checkpoint/policy"):
        if (p / sub / "config.json").exists():
            return p / sub
    raise FileNotFoundError(f"no policy checkpoint at {p} (expected config.json and model.safetensors there, "
                            f"or a training run folder with best/)")


def policy_env_kwargs(path: str | os.PathLike) -> dict[str, Any]:
    """The env kwargs a saved policy was trained with (from its env_args.json), minus the task."""
    p = resolve_policy_dir(path) / "env_args.json"
    if not p.exists():
        return {}
    kwargs = json.loads(p.read_text()).get("env_kwargs", {})
    return {k: v for k, v in kwargs.items() if k != "task"}


class PolicyAgent:
    """Wraps a policy loaded with ``vlagym.policies.load_policy``."""

    def __init__(self, policy, threads: int | None = 1) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.policy = policy.eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> PolicyAgent:
        from vlagym.policies import load_policy

        return cls(load_policy(resolve_policy_dir(path)).to(device))

    def reset(self) -> None:
        self.policy.reset()

    @torch.no_grad()
    def act(self, obs: dict[str, Any], info: dict[str, Any] | None = None) -> np.ndarray:
        return self.policy.act(obs)
