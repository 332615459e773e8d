"""Multi-step: "go to the red ball, then the yellow cube" (subgoals in order).

Each subgoal is the only landmark of its colour and shape; consecutive subgoals stand at least
1.5 m apart, so one spot never satisfies two of them. A subgoal counts as reached once the robot
comes within 0.5 m of it after reaching the ones before; success is reaching the last one (and
calling ``stop`` there, in discrete mode: an earlier ``stop`` ends the episode as a failure).
"""

from __future__ import annotations

import numpy as np

from vlagym.envs.nav.scene import Scene
from vlagym.envs.nav.task import MAX_GOALS, MIN_START_DIST, NavExpert, NavTask, Placer
from vlagym.envs.registry import register_task


@register_task("nav", "MultiStep")
class MultiStepTask(NavTask):
    """Args: num_goals: subgoals per episode (2 or 3); num_distractors, level: as in ``NavTask``.

    Level L5 (a novel composition of trained skills) is the three-goal tour: the other levels keep
    two goals, so training never sees three.
    """

    name = "multi_step"
    levels = NavTask.levels + ("L5",)
    max_steps = 750
    # {rest} is "the yellow cube" or, with three subgoals, "the yellow cube, then the green ball".
    templates = (
        "go to the {first}, then {rest}",
        "first go to the {first}, then go to {rest}",
        "visit the {first} and after that {rest}",
        "navigate to the {first} first, then to {rest}",
        "go to the {first}. next, go to {rest}",
        "head to the {first}, followed by {rest}",
    )

    def __init__(self, num_goals: int | None = None, num_distractors: tuple[int, int] | int | None = None,
                 level: str | None = None) -> None:
        super().__init__(num_distractors=num_distractors, level=level)
        if num_goals is None:
            num_goals = 3 if level == "L5" else 2
        if not 2 <= num_goals <= MAX_GOALS:
            raise ValueError(f"num_goals must be in [2, {MAX_GOALS}], got {num_goals}")
        if level is not None and (num_goals == 3) != (level == "L5"):
            raise ValueError(f"multi_step at level {level} has {'3' if level == 'L5' else '2'} goals, "
                             f"got num_goals={num_goals}")
        self.num_goals = num_goals

    def composition(self) -> bool:
        return self.num_goals == 3

    def sample(self, rng: np.random.Generator, scene: Scene, placer: Placer):
        goals = []
        for k in range(self.num_goals):
            goal = placer.place(
                *placer.random_key(target=k == 0), min_start=MIN_START_DIST, away=tuple(goals[-1:]), away_dist=1.5
            )
            if goal is None:
                return None
            goals.append(goal)
        rest = ", then ".join(f"the {g.words()}" for g in goals[1:])
        return goals, self.phrase(rng, first=goals[0].words(), rest=rest)

    def expert(self, noise: float = 0.0, seed: int | None = None) -> MultiStepExpert:
        return MultiStepExpert(self, noise=noise, seed=seed)


class MultiStepExpert(NavExpert):
    """Drive through the subgoals along the best combined route (the chained distance fields
    pick where to touch each subgoal so the next leg is short); stop only at the last."""
