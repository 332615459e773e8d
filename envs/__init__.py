"""Gymnasium environments. ``register_envs()`` (run by ``import vlagym``) registers every id."""

from __future__ import annotations

import gymnasium as gym

from vlagym.envs.nav.tasks import TASKS as NAV_TASKS
from vlagym.envs.tabletop.tasks import TASKS as TABLETOP_TASKS

# Registered id suffix -> tabletop task name.
_TABLETOP_IDS = {"Touch": "touch", "PickUp": "pick_up", "Place": "place", "Push": "push", "Stack": "stack"}

# Registered id suffix -> navigation task name.
_NAV_IDS = {"ObjectGoal": "object_goal", "RelationalGoal": "relational_goal", "MultiStep": "multi_step"}

TABLETOP_IDS: list[str] = [f"vlagym/Tabletop{k}-v0" for k, t in _TABLETOP_IDS.items() if t in TABLETOP_TASKS]
NAV_IDS: list[str] = [f"vlagym/Nav{k}-v0" for k in _NAV_IDS]
ENV_IDS: list[str] = TABLETOP_IDS + NAV_IDS


def register_envs() -> None:
    """Register all ids with Gymnasium; safe to call more than once."""
    for suffix, task in _TABLETOP_IDS.items():
        env_id = f"vlagym/Tabletop{suffix}-v0"
        if task not in TABLETOP_TASKS or env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="vlagym.envs.tabletop.env:TabletopEnv",
            kwargs={"task": task},
            max_episode_steps=TABLETOP_TASKS[task].max_steps,
        )
    for suffix, task in _NAV_IDS.items():
        env_id = f"vlagym/Nav{suffix}-v0"
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="vlagym.envs.nav.env:NavEnv",
            kwargs={"task": task},
            max_episode_steps=NAV_TASKS[task].max_steps,
        )


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if registered, else raise a ValueError listing the known ids."""
    register_envs()
    if env_id not in gym.registry:
        raise ValueError(f"unknown environment id {env_id!r}; registered vlagym ids: {', '.join(ENV_IDS)}")
    return env_id
