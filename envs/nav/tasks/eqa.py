"""Embodied question answering: "what colour is the box in the room with the red door" (Das et al. 2018).

The instruction is a question about one landmark, the *target*, which the agent must go and look at; the
episode ends when it calls ``stop`` (or at the step limit). Navigation is scored as in ``object_goal``
(success within 0.5 m of the target, SPL, final distance); the answer is scored by whoever answers
(``vlagym.vl.eqa``'s answerer reads the last frames), against ``info["answer"]``, the privileged truth.

Question families (``QUESTION_FAMILIES``), each a functional program over the scene (CLEVR):
* ``color``: "what colour is the {shape} in the room with the {door} door" -> the target's colour. The
  target is the only landmark of its shape in its room; a decoy of the same shape and another colour
  stands in another room, so the room must be found and the object seen.
* ``shape``: "what shape is the {colour} object in the room with the {door} door" -> the target's shape;
  the only landmark of its colour in its room, a decoy of that colour and another shape elsewhere.

Answers are drawn uniformly (the target's colour and shape come from ``Placer.random_key``), so a blind
answerer is near chance: 1 in 6 colours or 1 in 5 shapes at the training level. Instructions carry no
question mark (the instruction alphabet has none).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlagym.envs.levels import combo_allowed
from vlagym.envs.nav.objects import Landmark
from vlagym.envs.nav.robot import LEFT, RIGHT, STOP, TURN_STEP, wrap
from vlagym.envs.nav.scene import Scene
from vlagym.envs.nav.task import ALL_KEYS, MIN_START_DIST, NavExpert, NavTask, Placer, key_split
from vlagym.envs.registry import register_task

QUESTION_FAMILIES = ("color", "shape")
"""What a question asks for: the target's colour or its shape."""


def check_families(families) -> tuple[str, ...]:
    """``families`` as a tuple of known question families, or a ``ValueError`` naming the bad one."""
    if isinstance(families, str):
        families = tuple(f for f in families.replace(",", " ").split() if f)
    families = tuple(families)
    if not families:
        raise ValueError(f"question_families is empty; choose from {', '.join(QUESTION_FAMILIES)}")
    for f in families:
        if f not in QUESTION_FAMILIES:
            raise ValueError(f"unknown question family {f!r}; known: {', '.join(QUESTION_FAMILIES)}")
    return families


@register_task("nav", "EQA")
class EQATask(NavTask):
    """Args: question_families: the families to draw from (default both), a tuple or ``"color,shape"``;
    num_distractors, level: as in ``NavTask`` (distractors never make the question ambiguous)."""

    name = "eqa"
    max_steps = 500
    color_templates = (
        "what colour is the {obj} in the room with the {door} door",
        "what color is the {obj} in the room that has a {door} door",
        "tell me the colour of the {obj} in the room with the {door} door",
        "go to the room with the {door} door and say what colour the {obj} is",
        "which colour is the {obj} inside the room with the {door} door",
        "what colour is the {obj} in the room whose door is {door}",
    )
    shape_templates = (
        "what shape is the {color} object in the room with the {door} door",
        "what is the shape of the {color} thing in the room that has a {door} door",
        "tell me the shape of the {color} object in the room with the {door} door",
        "go to the room with the {door} door and say what shape the {color} object is",
        "which shape is the {color} object inside the room with the {door} door",
        "what shape is the {color} thing in the room whose door is {door}",
    )
    templates = color_templates + shape_templates

    def __init__(self, question_families=QUESTION_FAMILIES, num_distractors: tuple[int, int] | int | None = None,
                 level: str | None = None) -> None:
        super().__init__(num_distractors=num_distractors, level=level)
        self.families = check_families(question_families)
        # The task places its own distractors (so none makes the question ambiguous); the base adds none.
        self.own_distractors, self.num_distractors = self.num_distractors, (0, 0)
        self.family = self.families[0]
        self.room = -1

    def sample(self, rng: np.random.Generator, scene: Scene, placer: Placer):
        family = self.families[int(rng.integers(len(self.families)))]
        room = scene.rooms[int(rng.integers(len(scene.rooms)))]
        color, shape = placer.random_key(target=True)
        goal = placer.place(color, shape, where=scene.room_id == room.index, min_start=MIN_START_DIST)
        if goal is None:
            return None
        elsewhere = (scene.room_id >= 0) & (scene.room_id != room.index)
        clash = (lambda k: k[1] == shape) if family == "color" else (lambda k: k[0] == color)
        if len(scene.rooms) > 1:  # the decoy: what the question names, with another answer, in another room
            key = self._key(placer, clash)
            if key is not None:
                placer.place(*key, where=elsewhere)
        lo, hi = self.own_distractors or (len(scene.rooms) + 1, 2 * len(scene.rooms) + 2)
        for _ in range(int(rng.integers(lo, hi + 1))):
            key = placer.random_key()
            if not clash(key):
                placer.place(*key)
            elif len(scene.rooms) > 1:  # it would answer the question too: keep it out of the target's room
                placer.place(*key, where=elsewhere)
        self.family, self.room = family, room.index
        if family == "color":
            words = self.phrase(rng, self.color_templates, obj=shape, door=room.door_color)
        else:
            words = self.phrase(rng, self.shape_templates, color=color, door=room.door_color)
        return [goal], words

    def _key(self, placer: Placer, want) -> tuple[str, str] | None:
        """An unused (colour, shape) the level allows for a non-target, satisfying ``want``; None if none."""
        used = {lm.key for lm in placer.placed}
        keys = [k for k in ALL_KEYS if k not in used and want(k)
                and (self.level is None or combo_allowed(self.level, key_split(k), False))]
        return keys[int(placer.rng.integers(len(keys)))] if keys else None

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        self.program = self.answer_program()

    @property
    def answer(self) -> str:
        """The true answer: the target's colour or shape."""
        goal = self.goals[0]
        return goal.color if self.family == "color" else goal.shape

    def answer_program(self) -> list[dict[str, Any]]:
        """The question as a program over the scene (CLEVR's ``{function, value_inputs}``)."""
        goal = self.goals[0]
        named = ("filter_shape", goal.shape) if self.family == "color" else ("filter_color", goal.color)
        door = self.env.scene.rooms[self.room].door_color
        return [{"function": "scene", "value_inputs": []},
                {"function": "filter_room_door", "value_inputs": [door]},
                {"function": named[0], "value_inputs": [named[1]]},
                {"function": "unique", "value_inputs": []},
                {"function": f"query_{self.family}", "value_inputs": []}]

    def execute(self, landmarks: list[Landmark] | None = None) -> str:
        """Run the program on the scene's landmarks (a check that the question has one answer)."""
        lms = self.env.scene.landmarks if landmarks is None else landmarks
        for step in self.program[1:]:
            fn, args = step["function"], step["value_inputs"]
            if fn == "filter_room_door":
                room = next(r.index for r in self.env.scene.rooms if r.door_color == args[0])
                lms = [lm for lm in lms if lm.room == room]
            elif fn == "filter_shape":
                lms = [lm for lm in lms if lm.shape == args[0]]
            elif fn == "filter_color":
                lms = [lm for lm in lms if lm.color == args[0]]
            elif fn == "unique":
                if len(lms) != 1:
                    raise ValueError(f"question {self.instruction!r} picks out {len(lms)} landmarks, not one")
            else:
                return lms[0].color if fn == "query_color" else lms[0].shape
        raise ValueError(f"program {self.program} has no query")

    def info(self) -> dict[str, Any]:
        return {**super().info(), "answer": self.answer, "question_family": self.family}

    def expert(self, noise: float = 0.0, seed: int | None = None) -> EQAExpert:
        return EQAExpert(self, noise=noise, seed=seed)


class EQAExpert(NavExpert):
    """Drive the shortest clear path to the target; in discrete mode, once there, turn to face it (so the
    last frames show it) and stop. It reads the target from the simulator, so the decoy never distracts it."""

    def plan(self, obs: dict[str, Any], info: dict[str, Any]):
        task, robot = self.task, self.robot
        if robot.discrete and task.within(0):
            to = np.asarray(task.goals[0].xy) - robot.xy
            err = wrap(float(np.arctan2(to[1], to[0])) - robot.yaw)
            if abs(err) <= TURN_STEP / 2 + 1e-6:
                return STOP
            return LEFT if err > 0 else RIGHT
        return super().plan(obs, info)
