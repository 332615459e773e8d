"""Gymnasium environments. ``register_envs()`` (run by ``import vlagym``) registers every id."""

from __future__ import annotations

import gymnasium as gym
from gymnasium.envs.registration import WrapperSpec

from vlagym.envs.nav.tasks import TASKS as NAV_TASKS
from vlagym.envs.tabletop.tasks import TASKS as TABLETOP_TASKS

# Registered id suffix -> task name, per env family.
_TABLETOP_IDS = {"Touch": "touch", "PickUp": "pick_up", "Place": "place", "Push": "push", "Stack": "stack"}
_NAV_IDS = {"ObjectGoal": "object_goal", "RelationalGoal": "relational_goal", "MultiStep": "multi_step"}
# (id prefix, suffix -> task, the family's task classes, entry point)
_FAMILIES = (
    ("Tabletop", _TABLETOP_IDS, TABLETOP_TASKS, "vlagym.envs.tabletop.env:TabletopEnv"),
    ("Nav", _NAV_IDS, NAV_TASKS, "vlagym.envs.nav.env:NavEnv"),
)


# Outside TimeLimit: step() after termination or truncation raises until reset().
END_OF_EPISODE = WrapperSpec("EndOfEpisode", "vlagym.envs.core:EndOfEpisode", {})


def _ids(prefix: str, names: dict[str, str], tasks: dict) -> list[str]:
    return [f"vlagym/{prefix}{suffix}-v0" for suffix, task in names.items() if task in tasks]


TABLETOP_IDS: list[str] = _ids("Tabletop", _TABLETOP_IDS, TABLETOP_TASKS)
NAV_IDS: list[str] = _ids("Nav", _NAV_IDS, NAV_TASKS)
ENV_IDS: list[str] = TABLETOP_IDS + NAV_IDS


def register_envs() -> None:
    """Register all ids with Gymnasium; safe to call more than once."""
    for prefix, names, tasks, entry_point in _FAMILIES:
        for suffix, task in names.items():
            env_id = f"vlagym/{prefix}{suffix}-v0"
            if task not in tasks or env_id in gym.registry:
                continue
            gym.register(id=env_id, entry_point=entry_point, kwargs={"task": task},
                         max_episode_steps=tasks[task].max_steps, additional_wrappers=(END_OF_EPISODE,))


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if registered, else raise a ValueError listing the known ids."""
    register_envs()
    if env_id not in gym.registry:
        raise ValueError(f"unknown environment id {env_id!r}; registered vlagym ids: {', '.join(ENV_IDS)}")
    return env_id
