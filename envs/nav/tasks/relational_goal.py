"""Relational goal: "go to the blue box next to the shelf", "go to the green cone in the room
with the yellow door".

The object phrase alone is ambiguous on purpose: a decoy of the same colour and shape usually
stands elsewhere (by another piece of furniture, or in another room), and the relation tells
them apart. By construction exactly one landmark satisfies the whole phrase (``matches``):
* next to: within ``NEXT_TO`` m of a piece whose kind occurs once in the scene, in its room;
  decoys stay at least ``FAR`` m from it.
* in the room with the X door: each room has one closed door of a colour no other room has.
Success: within 0.5 m of the goal (and ``stop`` there, in discrete mode).
"""

from __future__ import annotations

import numpy as np

from vlagym.envs.nav.objects import Landmark
from vlagym.envs.nav.scene import Scene
from vlagym.envs.nav.task import MIN_START_DIST, NavExpert, NavTask, Placer
from vlagym.envs.registry import register_task

NEXT_TO = 0.45  # largest gap between the goal and its furniture
FAR = 1.2  # smallest gap between a decoy and that furniture


@register_task("nav", "RelationalGoal")
class RelationalGoalTask(NavTask):
    name = "relational_goal"
    max_steps = 500
    next_to_templates = (
        "go to the {obj} next to the {furniture}",
        "find the {obj} beside the {furniture}",
        "navigate to the {obj} that is next to the {furniture}",
        "head to the {obj} near the {furniture}",
        "walk to the {obj} by the {furniture}",
    )
    in_room_templates = (
        "go to the {obj} in the room with the {door} door",
        "find the {obj} in the room that has a {door} door",
        "navigate to the {obj} inside the room with the {door} door",
        "head to the {obj} in the room whose door is {door}",
        "walk to the {obj} in the room with the {door} door",
    )
    templates = next_to_templates + in_room_templates

    def sample(self, rng: np.random.Generator, scene: Scene, placer: Placer):
        kinds = [f.kind for f in scene.furniture]
        anchors = [f for f in scene.furniture if kinds.count(f.kind) == 1]
        color, shape = placer.random_key(target=True)
        radius = Landmark(color, shape).radius
        grid = scene.grid
        goal = None
        if anchors and (len(scene.rooms) == 1 or rng.random() < 0.5):
            f = anchors[int(rng.integers(len(anchors)))]
            near = grid.near(f.footprint(), radius + NEXT_TO) & (scene.room_id == f.room)
            goal = placer.place(color, shape, where=near, min_start=MIN_START_DIST)
        if goal is not None:  # (when nothing fits by the furniture, say which room instead)
            far = ~grid.near(f.footprint(), radius + FAR)
            others = [o for o in scene.furniture if o.kind != f.kind]
            if others and rng.random() < 0.5:  # the decoy stands by different furniture
                o = others[int(rng.integers(len(others)))]
                far &= grid.near(o.footprint(), radius + NEXT_TO) & (scene.room_id == o.room)
            placer.place(color, shape, where=far)
            self.relation = ("next_to", f)
            words = self.phrase(rng, self.next_to_templates, obj=goal.words(), furniture=f.kind)
        else:
            room = scene.rooms[int(rng.integers(len(scene.rooms)))]
            goal = placer.place(color, shape, where=scene.room_id == room.index, min_start=MIN_START_DIST)
            if goal is None:
                return None
            if len(scene.rooms) > 1:
                placer.place(color, shape, where=(scene.room_id >= 0) & (scene.room_id != room.index))
            self.relation = ("in_room", room)
            words = self.phrase(rng, self.in_room_templates, obj=goal.words(), door=room.door_color)
        return [goal], words

    def matches(self, lm: Landmark) -> bool:
        """Whether a landmark fits the instruction's whole description (BabyAI's ``verify``)."""
        goal = self.goals[0]
        if lm.key != goal.key:
            return False
        kind, anchor = self.relation
        if kind == "next_to":
            return (
                lm.room == anchor.room
                and float(anchor.footprint().distance(np.asarray(lm.xy))) <= lm.radius + NEXT_TO
            )
        return lm.room == anchor.index

    def info(self):
        return {**super().info(), "relation": self.relation[0]}

    def expert(self, noise: float = 0.0, seed: int | None = None) -> RelationalGoalExpert:
        return RelationalGoalExpert(self, noise=noise, seed=seed)


class RelationalGoalExpert(NavExpert):
    """Drive the shortest clear path to the one object the relation picks out (it reads the goal
    from the simulator, so the decoy never distracts it); in discrete mode, stop on arrival."""
