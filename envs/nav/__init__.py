"""Indoor navigation environments: procedural rooms, a differential-drive robot, three tasks."""

from vlagym.envs.nav.env import TASKS, NavEnv

__all__ = ["TASKS", "NavEnv"]
