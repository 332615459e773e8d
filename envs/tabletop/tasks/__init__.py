"""Tabletop tasks, one file each, registered where they are defined (``@register_task``).

``TASKS`` maps a task name to its class; every module of this package is imported, so a new task
is one new file here.
"""

from __future__ import annotations

from vlagym.envs.registry import TASKS as _ALL
from vlagym.envs.registry import import_task_modules

import_task_modules(__name__)
TASKS = _ALL["tabletop"]


def make_task(name: str, **kwargs):
    if name not in TASKS:
        raise ValueError(f"unknown tabletop task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name](**kwargs)
