"""Tabletop tasks, one file each. ``TASKS`` maps a task name to its class."""

from __future__ import annotations

from vlagym.envs.tabletop.tasks.pick_up import PickUpTask
from vlagym.envs.tabletop.tasks.place import PlaceTask
from vlagym.envs.tabletop.tasks.push import PushTask
from vlagym.envs.tabletop.tasks.stack import StackTask
from vlagym.envs.tabletop.tasks.touch import TouchTask

TASKS = {cls.name: cls for cls in (TouchTask, PickUpTask, PlaceTask, PushTask, StackTask)}


def make_task(name: str, **kwargs):
    if name not in TASKS:
        raise ValueError(f"unknown tabletop task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name](**kwargs)
