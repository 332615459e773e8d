"""Real observations for calibration and probing: expert rollouts in an env, or a recorded dataset, turned
into the step network's inputs exactly as ``act`` builds them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlagym.policies.base import Policy


def rollout_observations(env_id: str, episodes: int = 2, seed_start: int | None = None, max_steps: int = 40,
                         env_kwargs: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
    """Observations of ``episodes`` expert-driven episodes (at most ``max_steps`` each) of ``env_id``.

    Seeds come from the validation split by default, so calibration never sees the test seeds that
    evaluation reports on. The task's scripted expert drives: it visits the states a policy meets
    (reaching, grasping, carrying), which random actions would not."""
    import gymnasium as gym

    from vlagym.core.splits import VAL_SEED_START

    if episodes < 1 or max_steps < 1:
        raise ValueError(f"rollout_observations needs episodes >= 1 and max_steps >= 1, got {episodes}, {max_steps}")
    seed_start = VAL_SEED_START if seed_start is None else seed_start
    env = gym.make(env_id, **(env_kwargs or {}))
    out = []
    try:
        for i in range(episodes):
            obs, info = env.reset(seed=seed_start + i)
            expert = env.unwrapped.task.expert()
            observations = [obs]
            for _ in range(max_steps - 1):
                obs, _, term, trunc, info = env.step(expert.act(obs, info))
                if term or trunc:
                    break
                observations.append(obs)
            out.append(observations)
    finally:
        env.close()
    return out


def dataset_observations(root: str | Path, episodes: int = 2, max_steps: int = 40) -> list[list[dict[str, Any]]]:
    """Observations of the first ``episodes`` demos of a recorded dataset (``vlagym collect``'s HDF5 shards),
    at most ``max_steps`` each, with each demo's instruction."""
    from vlagym.dataio.dataset import index_demos, load_demo

    refs = index_demos(root)[:episodes]  # any registered format, through the dataset interface
    if not refs:
        raise ValueError(f"calibration dataset {root} holds no demos")
    out = []
    for ref in refs:
        demo = load_demo(ref)
        instruction = ref.instruction
        if not isinstance(instruction, str) or not instruction:
            raise ValueError(f"{ref.path} {ref.key}: the demo has no 'instruction' attribute")
        n = min(max_steps, len(next(iter(demo["obs"].values()))))
        out.append([{**{k: v[t] for k, v in demo["obs"].items()}, "instruction": instruction} for t in range(n)])
    return out


def teacher_env_kwargs(directory: str | Path) -> dict[str, Any]:
    """The env kwargs (minus the task, which the env id fixes) in a policy folder's env_args.json; {} when
    it has none. Calibration images must come from the env the policy was trained on (size, cameras)."""
    from vlagym.core.env_args import ENV_ARGS_NAME
    from vlagym.core.io import read_json

    path = Path(directory) / ENV_ARGS_NAME
    if not path.exists():
        return {}
    data = read_json(path)
    kwargs = data.get("env_kwargs", {}) if isinstance(data, dict) else None
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path}: expected an object with an 'env_kwargs' object")
    return {k: v for k, v in kwargs.items() if k != "task"}


@torch.no_grad()
def step_inputs_from(policy: Policy, episodes: Iterable[Iterable[dict[str, Any]]]) -> list[dict[str, np.ndarray]]:
    """The step network's inputs on every decision ``policy.act`` makes over ``episodes`` (lists of
    observations), as numpy arrays by input name: the history and caches are ``act``'s own, since they
    are recorded from inside it. The policy is reset before each episode and after the last."""
    recorded: list[dict[str, np.ndarray]] = []
    previous = policy.__dict__.get("_step_runner")
    step = policy.step_module()

    def record(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        recorded.append({k: v.detach().cpu().numpy().copy() for k, v in inputs.items()})
        return previous(inputs) if previous is not None else tuple(step(*inputs.values()))

    policy.set_step_runner(record)
    try:
        for episode in episodes:
            policy.reset()
            for obs in episode:
                policy.act(obs)
    finally:
        policy.set_step_runner(previous)
        policy.reset()
    return recorded
