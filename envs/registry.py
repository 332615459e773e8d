"""Where a task registers itself: ``@register_task("tabletop", "PickUp")`` on its class, in its own file.

The decorator records the class under its family and gives it the Gymnasium id
``vlagym/<Family><Suffix>-v0``; ``vlagym.envs`` registers every recorded id with Gymnasium, and each
family's ``tasks`` package imports every module in it (``import_task_modules``), so a new task is one
file dropped into ``envs/<family>/tasks/``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass


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
        return cls

    return decorate


def import_task_modules(package: str) -> None:
    """Import every module of a ``tasks`` package, so that each one's ``@register_task`` runs."""
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        importlib.import_module(f"{package}.{info.name}")
