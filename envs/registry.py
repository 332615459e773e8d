"""Where a task registers itself: ``@register_task("tabletop", "PickUp")`` on its class, in its own file.

The decorator records the class under its family and registers the Gymnasium id
``vlagym/<Family><Suffix>-v0``. Each family's ``tasks`` package imports every module in it
(``import_task_modules``), so a new task is one file dropped into ``envs/<family>/tasks/``. A task
defined outside vlagym (in a user's own package) registers the same way when its module is imported;
its id then names the task as ``"module:Class"``, so a worker process that makes the env imports the
module itself (docs/adding-a-task.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

import gymnasium as gym
from gymnasium.envs.registration import WrapperSpec

from vlagym.core.plugins import load_plugins


@dataclass(frozen=True)
class Family:
    prefix: str
    entry_point: str


FAMILIES = {
    "tabletop": Family("Tabletop", "vlagym.envs.tabletop.env:TabletopEnv"),
    "nav": Family("Nav", "vlagym.envs.nav.env:NavEnv"),
}
TASKS: dict[str, dict[str, type]] = {family: {} for family in FAMILIES}
"""family -> task name -> task class, in registration order."""
IDS: dict[str, tuple[str, str]] = {}
"""Gymnasium id -> (family, task name)."""


def register_task(family: str, suffix: str):
    """Class decorator: record a task class (its ``name``) under ``family`` with id ``vlagym/<Prefix><suffix>-v0``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; known: {sorted(FAMILIES)}")
    env_id = f"vlagym/{FAMILIES[family].prefix}{suffix}-v0"

    def decorate(cls: type) -> type:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or name in ("", "task"):
            raise ValueError(f"{cls.__name__} needs a class attribute `name` (its task name) to register")
        for fam, tasks in TASKS.items():
            if name in tasks and tasks[name] is not cls and fam == family:
                raise ValueError(f"task name {name!r} is taken by {tasks[name].__name__}")
        if env_id in IDS and IDS[env_id] != (family, name):
            raise ValueError(f"{env_id} is taken by the {IDS[env_id][0]} task {IDS[env_id][1]!r}")
        TASKS[family][name] = cls
        IDS[env_id] = (family, name)
        register_with_gym(env_id, family, cls)
        return cls

    return decorate


# Outside TimeLimit: step() after termination or truncation raises until reset().
END_OF_EPISODE = WrapperSpec("EndOfEpisode", "vlagym.envs.core:EndOfEpisode", {})


def task_reference(cls: type) -> str:
    """What an env id's ``task`` kwarg holds: the task's name for vlagym's own tasks, ``"module:Class"``
    for a task defined elsewhere (so that a fresh process can import it)."""
    return cls.name if cls.__module__.startswith("vlagym.") else f"{cls.__module__}:{cls.__qualname__}"


def register_with_gym(env_id: str, family: str, cls: type) -> None:
    if env_id in gym.registry:
        return
    gym.register(id=env_id, entry_point=FAMILIES[family].entry_point, kwargs={"task": task_reference(cls)},
                 max_episode_steps=cls.max_steps, additional_wrappers=(END_OF_EPISODE,))


def task_class(family: str, task: str) -> type:
    """The task class an env's ``task`` kwarg names: a registered task name, or ``"module:Class"`` (the module
    is imported, which registers it)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; known: {sorted(FAMILIES)}")
    if task in TASKS[family]:
        return TASKS[family][task]
    if ":" in task:
        module, _, qualname = task.partition(":")
        try:
            cls = getattr(importlib.import_module(module), qualname)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"task {task!r}: cannot import it ({type(e).__name__}: {e})") from e
        if TASKS[family].get(getattr(cls, "name", None)) is not cls:
            raise ValueError(f"task {task!r} is not a registered {family} task (decorate it with "
                             f"@register_task({family!r}, ...))")
        return cls
    raise ValueError(f"unknown {family} task {task!r}; available: {sorted(TASKS[family])}")


PLUGIN_GROUP = "vlagym.tasks"


def load_task_plugins() -> None:
    """Import the task modules other installed packages declare, so their ``@register_task`` runs::

        [project.entry-points."vlagym.tasks"]
        hold_high = "my_package.hold_high"
    """
    load_plugins(PLUGIN_GROUP, "task")


def import_task_modules(package: str) -> None:
    """Import every module of a ``tasks`` package, so that each one's ``@register_task`` runs."""
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        importlib.import_module(f"{package}.{info.name}")
