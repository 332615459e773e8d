"""Tabletop tasks, one file each, registered where they are defined (``@register_task``).

``TASKS`` maps a task name to its class; every module of this package is imported, so a new task
is one new file here.
"""

from __future__ import annotations

from vlagym.envs.registry import TASKS as _ALL
from vlagym.envs.registry import import_task_modules, task_class

import_task_modules(__name__)
TASKS = _ALL["tabletop"]


def make_task(name: str, **kwargs):
    """A task by registered name, or by ``"module:Class"`` for a task defined outside vlagym."""
    return task_class("tabletop", name)(**kwargs)
