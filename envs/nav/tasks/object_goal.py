"""Object goal: "go to the red ball" (Habitat ObjectNav with a colour and a shape).

The goal is the only landmark of its colour and shape in the scene; distractors differ in at
least one of the two. Success: within 0.5 m of it (and ``stop`` there, in discrete mode).
"""

from __future__ import annotations

import numpy as np

from vlagym.envs.nav.scene import Scene
from vlagym.envs.nav.task import MIN_START_DIST, NavExpert, NavTask, Placer
from vlagym.envs.registry import register_task


@register_task("nav", "ObjectGoal")
class ObjectGoalTask(NavTask):
    name = "object_goal"
    max_steps = 500
    templates = (
        "go to the {obj}",
        "navigate to the {obj}",
        "find the {obj}",
        "walk over to the {obj}",
        "head to the {obj}",
        "find the {obj} and go to it",
        "move next to the {obj}",
    )

    def sample(self, rng: np.random.Generator, scene: Scene, placer: Placer):
        goal = placer.place(*placer.random_key(target=True), min_start=MIN_START_DIST)
        if goal is None:
            return None
        return [goal], self.phrase(rng, obj=goal.words())

    def expert(self, noise: float = 0.0, seed: int | None = None) -> ObjectGoalExpert:
        return ObjectGoalExpert(self, noise=noise, seed=seed)


class ObjectGoalExpert(NavExpert):
    """Drive the shortest clear path to the object; in discrete mode, stop on arrival."""
