"""Tabletop tasks, one file each. ``TASKS`` maps a task name to its class."""

from __future__ import annotations

from vlagym.envs.tabletop.tasks.touch import TouchTask

TASKS = {cls.name: cls for cls in (TouchTask,)}


def make_task(name: str, **kwargs):
    if name not in TASKS:
        raise ValueError(f"unknown tabletop task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name](**kwargs)
