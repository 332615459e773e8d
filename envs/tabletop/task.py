"""The tabletop task base: objects on the table, their words, and state for RL."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from vlagym.envs.core import Task
from vlagym.envs.labels import RoleTarget
from vlagym.envs.levels import Phraser, check_level, combo_allowed, combo_split, episode_split
from vlagym.envs.tabletop.objects import (
    COLORS,
    GRASPABLE,
    SHAPES,
    SIZES,
    ObjectSpec,
    place_without_overlap,
    spawn,
)
from vlagym.envs.tabletop.panda import FINGER_JOINTS

# Where objects may stand: (low, high) of x, y in the robot's base frame (metres).
REGION = np.array([[0.32, -0.24], [0.66, 0.24]])
MAX_OBJECTS = 5
OBJECT_STATE_DIM = 6  # x, y, z, sin(yaw), cos(yaw), present
SYMMETRY = {"cube": 4, "cylinder": 0, "bowl": 0}  # quarter turns that leave a shape looking the same


class TabletopTask(Task):
    """Base for tabletop tasks.

    Subclasses implement ``sample(rng) -> (objects, instruction)`` where objects are the
    task's own (target first) and the base adds distractors, places everything and
    spawns it. Names in the simulator are ``obj0``, ``obj1``, ... in that order.
    """

    num_distractors: tuple[int, int] = (1, 3)
    state_dim = MAX_OBJECTS * OBJECT_STATE_DIM
    # Generalization levels this task supports (``vlagym.envs.levels``); L5 where it defines a composition.
    levels: tuple[str, ...] = ("train", "L1", "L2", "L3", "L4")
    # Objects the task itself names (target first); distractors fill the table up to ``MAX_OBJECTS``.
    own_objects: int = 1

    def __init__(self, num_distractors: tuple[int, int] | int | None = None, level: str | None = None) -> None:
        super().__init__()
        self.level = check_level(level)
        if level is not None and level not in self.levels:
            raise ValueError(f"task {self.name!r} has no level {level!r}; it supports {', '.join(self.levels)}")
        self.phraser = Phraser(level)
        if num_distractors is not None:
            lo, hi = (num_distractors, num_distractors) if isinstance(num_distractors, int) else num_distractors
            if not 0 <= lo <= hi:
                raise ValueError(f"num_distractors must be 0 <= low <= high, got {num_distractors!r}")
            cap = MAX_OBJECTS - self.max_own_objects()
            if hi > cap:
                raise ValueError(f"num_distractors {num_distractors!r} exceeds the cap of {cap} for task "
                                 f"{self.name!r}{'' if level is None else f' at level {level}'}: at most "
                                 f"{MAX_OBJECTS} objects fit the table, {self.max_own_objects()} of them the task's")
            self.num_distractors = (lo, hi)
        self.objects: list[ObjectSpec] = []

    # --- for subclasses -----------------------------------------------------------------------------------
    def max_own_objects(self) -> int:
        """The most objects of the task's own an episode at this level may have."""
        return self.own_objects

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator) -> tuple[list[ObjectSpec], str]:
        """The task's own objects (target first) and the instruction naming them."""

    templates: tuple[str, ...] = ()

    def phrase(self, rng: np.random.Generator, templates: tuple[str, ...] | None = None, **words: str) -> str:
        return self.phraser.phrase(rng, self.templates if templates is None else templates, **words)

    def allowed(self, color: str, shape: str, target: bool = False) -> bool:
        """Whether this episode's level lets an object of this colour and shape be drawn."""
        return combo_allowed(self.level, combo_split("tabletop", color, shape, COLORS, SHAPES), target)

    def random_spec(self, rng: np.random.Generator, shapes=GRASPABLE, exclude: list[ObjectSpec] = (),
                    target: bool = False) -> ObjectSpec:
        """A spec whose colour-and-shape differs from every spec in ``exclude`` and fits the level.

        ``target``: the first named object, the one that L2 and L3 episodes draw from the held-out side.
        """
        taken = {(s.color, s.shape) for s in exclude}
        choices = [(c, s) for c in COLORS for s in shapes if (c, s) not in taken]
        if self.level is not None:
            choices = [(c, s) for c, s in choices if self.allowed(c, s, target)]
            if not choices:
                raise RuntimeError(f"{self.name}: no {'/'.join(shapes)} left for level {self.level}")
        color, shape = choices[rng.integers(len(choices))]
        return ObjectSpec(shape=shape, color=color, size=str(rng.choice(SIZES)))

    def composition(self) -> bool:
        """Whether this episode is a held-out (L5) task composition."""
        return False

    def generalization_split(self) -> str:
        splits = [combo_split("tabletop", s.color, s.shape, COLORS, SHAPES) for s in self.objects]
        return episode_split(splits, self.phraser.template_split, self.composition())

    def name_of(self, index: int) -> str:
        return f"obj{index}"

    # --- Task API -----------------------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator) -> None:
        own, self.instruction = self.sample(rng)
        n = int(rng.integers(self.num_distractors[0], self.num_distractors[1] + 1))
        n = min(n, MAX_OBJECTS - len(own))
        specs = list(own)
        for _ in range(n):
            # Distractors never share colour and shape with another object, so every
            # phrase like "the red cube" names exactly one object. At most two bowls:
            # they are large and crowd the table.
            shapes = GRASPABLE + ("bowl",) if sum(s.shape == "bowl" for s in specs) < 2 else GRASPABLE
            specs.append(self.random_spec(rng, shapes=shapes, exclude=specs))
        self.objects = specs
        for i, (spec, (xy, yaw)) in enumerate(zip(specs, place_without_overlap(rng, specs, REGION))):
            spawn(self.sim, self.name_of(i), spec, xy, yaw)
        # Let objects settle on the table before the first observation.
        for _ in range(10):
            self.sim.client.stepSimulation()

    def state(self) -> np.ndarray:
        out = np.zeros((MAX_OBJECTS, OBJECT_STATE_DIM), dtype=np.float32)
        for i in range(len(self.objects)):
            pos = self.sim.position(self.name_of(i))
            yaw = self.sim.yaw(self.name_of(i))
            out[i] = (*pos, np.sin(yaw), np.cos(yaw), 1.0)
        return out.ravel()

    def info(self) -> dict[str, Any]:
        return {"objects": [s.words(with_size=True) for s in self.objects],
                "generalization_split": self.generalization_split()}

    label_roles = ("object",)

    def role_targets(self) -> dict[str, RoleTarget]:
        """The named object (its centre); tasks with a destination add it."""
        return {"object": self.role_of(0)}

    def role_of(self, index: int) -> RoleTarget:
        name = self.name_of(index)
        return RoleTarget(self.sim.position(name), name, self.sim.yaw(name), SYMMETRY[self.objects[index].shape])

    def unsolvable(self) -> str | None:
        """An object the task names has left the table top or the hand's reach, or a cylinder lies on its side."""
        from vlagym.envs.tabletop.panda import WORKSPACE

        for i in range(min(self.own_objects, len(self.objects))):
            spec, pos = self.objects[i], self.sim.position(self.name_of(i))
            if pos[2] < -0.01:
                return f"the {spec.words()} fell off the table"
            if not (np.all(pos[:2] >= WORKSPACE[0, :2] - 0.02) and np.all(pos[:2] <= WORKSPACE[1, :2] + 0.02)):
                return f"the {spec.words()} is out of the hand's reach"
            if spec.shape != "cylinder":  # a cube rests on any face; a bowl is not moved
                continue
            up = self.sim.client.getMatrixFromQuaternion(self.sim.client.getBasePositionAndOrientation(
                self.sim.bodies[self.name_of(i)])[1])[8]
            if abs(up) < 0.7:
                return f"the {spec.words()} lies on its side"
        return None

    # --- helpers ------------------------------------------------------------------------------------------
    def ee(self) -> np.ndarray:
        return self.env.robot.ee_pose()[0]

    def touching(self, index: int) -> bool:
        return self.sim.in_contact("robot", self.name_of(index))

    def grasped(self, index: int) -> bool:
        """Both fingers touch the object."""
        return all(self.sim.in_contact("robot", self.name_of(index), link_a=j) for j in FINGER_JOINTS)
