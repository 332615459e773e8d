"""Gymnasium environments. ``register_envs()`` (run by ``import vlagym``) registers every id."""

from __future__ import annotations

import gymnasium as gym

import vlagym.envs.nav.tasks  # noqa: F401  (imports, and so registers, every navigation task)
import vlagym.envs.tabletop.tasks  # noqa: F401  (every tabletop task)
from vlagym.envs.registry import FAMILIES, IDS, TASKS, load_task_plugins, register_with_gym, task_class

load_task_plugins()  # tasks other packages declare under the "vlagym.tasks" entry-point group


TABLETOP_IDS: list[str] = [env_id for env_id, (family, _) in IDS.items() if family == "tabletop"]
NAV_IDS: list[str] = [env_id for env_id, (family, _) in IDS.items() if family == "nav"]
ENV_IDS: list[str] = TABLETOP_IDS + NAV_IDS


def register_envs() -> None:
    """Register every id a task registered (``vlagym.envs.registry``) with Gymnasium, again if someone removed
    it from ``gym.registry``; safe to call more than once."""
    for env_id, (family, task) in IDS.items():
        register_with_gym(env_id, family, TASKS[family][task])


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if registered, else raise a ValueError listing the known ids."""
    register_envs()
    if env_id not in gym.registry:
        raise ValueError(f"unknown environment id {env_id!r}; registered vlagym ids: {', '.join(ENV_IDS)}")
    return env_id


def env_constructor_args(env_id: str) -> list[str]:
    """The keyword arguments ``gym.make(env_id, ...)`` passes on to the env's constructor (and, for
    navigation, to its task), without ``task``, which the id fixes."""
    import inspect

    spec = gym.spec(check_env_id(env_id))
    module, name = spec.entry_point.split(":")
    cls = getattr(__import__(module, fromlist=[name]), name)
    params = inspect.signature(cls.__init__).parameters
    names = {n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):  # NavEnv(**task_kwargs) -> the task's own
        family = next(f for f, fam in FAMILIES.items() if fam.entry_point == spec.entry_point)
        task = task_class(family, spec.kwargs["task"])
        names |= {n for n, p in inspect.signature(task.__init__).parameters.items()
                  if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return sorted(names - {"task"})


def check_env_kwargs(env_id: str, kwargs: dict) -> tuple[gym.spaces.Space, gym.spaces.Space]:
    """Refuse env kwargs that ``gym.make(env_id, **kwargs)`` would refuse, before any episode runs: unknown
    names, and values the constructor rejects (a level the task does not define, an image size out of
    range, ...). Builds the env once (no rendering: that happens at reset) and returns its
    ``(observation_space, action_space)``."""
    allowed = env_constructor_args(env_id)
    if "task" in kwargs:
        raise ValueError(f"env kwarg 'task' cannot be set for {env_id}: the env id fixes the task")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown env kwarg{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
                         f"{env_id}; it takes {', '.join(allowed)}")
    try:
        env = gym.make(env_id, **kwargs)
    except TypeError as e:  # a wrong type deep in the constructor
        raise ValueError(f"env kwargs {kwargs!r} for {env_id}: {e}") from e
    except ValueError as e:
        raise ValueError(f"env kwargs for {env_id}: {e}") from e
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
