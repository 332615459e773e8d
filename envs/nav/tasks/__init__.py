"""Navigation tasks, one file each. ``TASKS`` maps a task name to its class."""

from __future__ import annotations

from vlagym.envs.nav.tasks.multi_step import MultiStepTask
from vlagym.envs.nav.tasks.object_goal import ObjectGoalTask
from vlagym.envs.nav.tasks.relational_goal import RelationalGoalTask

TASKS = {cls.name: cls for cls in (ObjectGoalTask, RelationalGoalTask, MultiStepTask)}


def make_task(name: str, **kwargs):
    if name not in TASKS:
        raise ValueError(f"unknown navigation task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name](**kwargs)
