"""The navigation task base: landmarks, goals in order, success, distances, state, and the expert.

A task's ``sample`` places its goal landmarks (and any decoys its sentence must rule out) and
words the instruction; the base adds distractors, checks that the goals are reachable in order
from the start, and builds the distance fields that judge progress, measure the shortest path
and steer the expert.

Success: the robot's centre within ``SUCCESS_DIST`` (0.5 m) of the goal object's footprint,
subgoals in order. In discrete mode the agent must also call ``stop`` there (Habitat ObjectNav);
in continuous mode arriving suffices.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from vlagym.envs.core import Expert, Task
from vlagym.envs.labels import RoleTarget
from vlagym.envs.levels import Phraser, check_level, combo_allowed, combo_split, episode_split
from vlagym.envs.nav.grid import ROBOT_RADIUS, Field, smoothed_length
from vlagym.envs.nav.objects import COLORS, SHAPES, Landmark
from vlagym.envs.nav.robot import FORWARD, LEFT, MAX_ANGULAR, MAX_LINEAR, RIGHT, STOP, TURN_STEP, wrap
from vlagym.envs.nav.scene import Scene

SUCCESS_DIST = 0.5
EXPERT_DIST = 0.35  # the expert aims this close: well inside the success distance
MIN_START_DIST = 1.5  # goals start at least this far (to their surface) from the robot
LOOKAHEAD = 0.6  # metres along the planned path that the tracker steers towards
MAX_GOALS = 3
GOAL_STATE = 5  # per goal slot: x, y in the robot frame, distance to its surface, reached, present
STATE_DIM = (
    MAX_GOALS * GOAL_STATE + 3
)  # + waypoint direction (x, y in the robot frame), geodesic distance left
MAX_TRIES = 50
ALL_KEYS = [(c, s) for c in COLORS for s in SHAPES]


def key_split(key: tuple[str, str]) -> str:
    """The generalization split of a landmark's (colour, shape)."""
    return combo_split("nav", key[0], key[1], COLORS, SHAPES)


class Placer:
    """Draws landmark positions on free floor, away from the start, the doorways and each other."""

    def __init__(self, scene: Scene, start: np.ndarray, rng: np.random.Generator, slack: float = 1.0,
                 level: str | None = None) -> None:
        self.scene, self.start, self.rng = scene, start, rng
        self.slack = slack  # scales the spacing asked for; below 1 where a small room cannot give it
        self.level = level
        self.placed: list[Landmark] = []

    def random_key(self, exclude=(), target: bool = False) -> tuple[str, str]:
        """A (colour, shape) pair unused by the placed landmarks and ``exclude``, fitting the level.

        ``target``: the first named goal, which L2 and L3 episodes draw from the held-out side.
        """
        used = {lm.key for lm in self.placed} | set(exclude)
        keys = [k for k in ALL_KEYS if k not in used]
        if self.level is not None:
            keys = [k for k in keys if combo_allowed(self.level, key_split(k), target)]
        return keys[int(self.rng.integers(len(keys)))]

    def place(
        self,
        color: str,
        shape: str,
        where: np.ndarray | None = None,
        min_start: float = 0.6,
        away: tuple[Landmark, ...] = (),
        away_dist: float = 0.0,
    ) -> Landmark | None:
        """Place a landmark (inside the boolean grid ``where`` if given); None when nothing fits.

        ``min_start`` is the least distance from the start to the landmark's surface; ``away``
        lists landmarks whose surfaces it must stay ``away_dist`` from.
        """
        scene, rng = self.scene, self.rng
        lm = Landmark(color, shape, yaw=float(rng.uniform(-np.pi, np.pi)))
        ok = scene.landmark_spots(lm.radius)
        if where is not None:
            ok = ok & where
        cand = np.flatnonzero(ok)
        pts = scene.grid.centers.reshape(-1, 2)[cand]
        keep = np.hypot(*(pts - self.start).T) >= lm.radius + max(min_start * self.slack, ROBOT_RADIUS + 0.3)
        for other in self.placed:
            keep &= np.hypot(*(pts - other.xy).T) >= lm.radius + other.radius + 0.4
        for other in away:
            keep &= np.hypot(*(pts - other.xy).T) >= lm.radius + other.radius + away_dist * self.slack
        cand = np.flatnonzero(keep)
        if cand.size == 0:
            return None
        xy = pts[cand[rng.integers(cand.size)]] + rng.uniform(-0.5, 0.5, 2) * scene.grid.res
        lm.xy = (float(xy[0]), float(xy[1]))
        lm.room = scene.room_of(xy)
        self.placed.append(lm)
        return lm


class NavTask(Task):
    """Base for navigation tasks; subclasses implement ``sample`` and ``expert``.

    Args:
        num_distractors: ``(low, high)`` extra landmarks, or an int; by default between
            ``rooms + 1`` and ``2 * rooms + 2``.
    """

    templates: tuple[str, ...] = ()
    state_dim = STATE_DIM
    # Generalization levels this task supports (``vlagym.envs.levels``); L5 where it defines a composition.
    levels: tuple[str, ...] = ("train", "L1", "L2", "L3", "L4")

    def __init__(self, num_distractors: tuple[int, int] | int | None = None, level: str | None = None) -> None:
        super().__init__()
        self.level = check_level(level)
        if level is not None and level not in self.levels:
            raise ValueError(f"task {self.name!r} has no level {level!r}; it supports {', '.join(self.levels)}")
        self.phraser = Phraser(level)
        self.landmark_keys: list[tuple[str, str]] = []
        if num_distractors is not None:
            lo, hi = (
                (num_distractors, num_distractors) if isinstance(num_distractors, int) else num_distractors
            )
            if not 0 <= lo <= hi:
                raise ValueError(f"num_distractors must be 0 <= low <= high, got {num_distractors!r}")
            num_distractors = (lo, hi)
        self.num_distractors = num_distractors
        self.goals: list[Landmark] = []
        self.reached = 0
        self.shortest_path_length = 0.0

    # --- for subclasses -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def sample(
        self, rng: np.random.Generator, scene: Scene, placer: Placer
    ) -> tuple[list[Landmark], str] | None:
        """Place the goal landmarks (in visiting order) and any decoys; return (goals, instruction).

        Return None when the scene has no room for them; the base then tries again.
        """

    def phrase(self, rng: np.random.Generator, templates: tuple[str, ...] | None = None, **words: str) -> str:
        return self.phraser.phrase(rng, self.templates if templates is None else templates, **words)

    def composition(self) -> bool:
        """Whether this episode is a held-out (L5) task composition."""
        return False

    def generalization_split(self) -> str:
        return episode_split([key_split(k) for k in self.landmark_keys], self.phraser.template_split,
                             self.composition())

    # --- Task API -------------------------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator) -> None:
        scene: Scene = self.env.scene
        start = self.env.robot.xy
        for attempt in range(MAX_TRIES):
            # Small rooms cannot always keep goals 1.5 m from the start and from each other:
            # after half the tries, ask for less (never under the success distance).
            slack = 1.0 if attempt < MAX_TRIES // 2 else 0.6
            placer = Placer(scene, start, rng, slack, level=self.level)
            out = self.sample(rng, scene, placer)
            if out is None:
                continue
            goals, instruction = out
            lo, hi = self.num_distractors or (len(scene.rooms) + 1, 2 * len(scene.rooms) + 2)
            for _ in range(int(rng.integers(lo, hi + 1))):
                placer.place(*placer.random_key())
            scene.set_landmarks(placer.placed)
            if self._plan(scene, start, goals):
                break
        else:
            raise RuntimeError(f"{self.name}: no reachable goal placement in {MAX_TRIES} tries")
        self.goals, self.instruction = goals, instruction
        self.landmark_keys = [lm.key for lm in placer.placed]
        scene.spawn_landmarks(self.sim)
        self.reached = 0
        self._prev_geodesic = self.geodesic_distance()

    def update(self, stopped: bool) -> None:
        """Advance through the subgoals after a step; ``stopped``: discrete ``stop`` was called."""
        n = len(self.goals)
        while self.reached < n - 1 and self.within(self.reached):
            self.reached += 1
        if self.reached == n - 1 and self.within(n - 1) and (stopped or not self.env.robot.discrete):
            self.reached = n

    def is_success(self) -> bool:
        return self.reached == len(self.goals)

    def info(self) -> dict[str, Any]:
        return {
            "distance_to_goal": self.goal_distance(self.current),
            "geodesic_distance_to_goal": self.geodesic_distance(),
            "shortest_path_length": self.shortest_path_length,
            "path_length": self.env.robot.path_length,
            "subgoals_reached": min(self.reached, len(self.goals)),
            "num_subgoals": len(self.goals),
            "collided": self.env.robot.collided,
            "generalization_split": self.generalization_split(),
        }

    def dense_reward(self) -> float:
        """Progress along the geodesic (m), -0.01 per step, +2.5 on success (Habitat's PointNav shaping)."""
        geo = self.geodesic_distance()
        reward = self._prev_geodesic - geo - 0.01 + 2.5 * float(self.is_success())
        self._prev_geodesic = geo
        return float(reward)

    def state(self) -> np.ndarray:
        """Goals in the robot frame (slots in visiting order), then the planner's waypoint direction."""
        robot = self.env.robot
        c, s = np.cos(robot.yaw), np.sin(robot.yaw)
        to_robot = np.array([[c, s], [-s, c]])
        out = np.zeros((MAX_GOALS, GOAL_STATE))
        for i, g in enumerate(self.goals):
            out[i] = (
                *(to_robot @ (np.asarray(g.xy) - robot.xy)),
                self.goal_distance(i),
                float(i < self.reached),
                1.0,
            )
        way = to_robot @ (self.waypoint(robot.xy) - robot.xy)
        way = way / max(float(np.linalg.norm(way)), 1e-6)
        return np.concatenate([out.ravel(), way, [self.geodesic_distance()]]).astype(np.float32)

    # --- geometry -------------------------------------------------------------------------------------------
    label_roles = ("goal",)

    def role_targets(self) -> dict[str, RoleTarget]:
        """The goal being sought (the current subgoal), at half its height."""
        goal = self.goals[self.current]
        k = next(i for i, lm in enumerate(self.env.scene.landmarks) if lm is goal)
        return {"goal": RoleTarget(np.array([goal.xy[0], goal.xy[1], goal.height / 2]), f"landmark{k}")}

    @property
    def current(self) -> int:
        """Index of the goal being sought (the last one once all are reached)."""
        return min(self.reached, len(self.goals) - 1)

    def goal_distance(self, k: int) -> float:
        """Metres from the robot's centre to goal ``k``'s footprint."""
        return float(self.goals[k].footprint().distance(self.env.robot.xy))

    def within(self, k: int) -> bool:
        return self.goal_distance(k) <= SUCCESS_DIST

    def geodesic_distance(self) -> float:
        """Shortest-path metres left on the grid, through the remaining subgoals."""
        if self.is_success():
            return 0.0
        d = self._geo[self.current].value(self.env.robot.xy)
        return d if np.isfinite(d) else self._prev_geodesic

    def waypoint(self, xy, ahead: float = LOOKAHEAD) -> np.ndarray:
        """The furthest point, up to ``ahead`` metres along the expert's planned path towards the
        current goal, that the robot can drive to in a straight line."""
        field = self._steer[self.current]
        cells = field.path(xy, max_cells=int(ahead / field.grid.res))
        if not cells:
            return np.asarray(self.goals[self.current].xy, dtype=np.float64)
        scene = self.env.scene
        for i in reversed(cells[1:]):  # usually the first try: the path is mostly straight
            p = field.point(i)
            if scene.grid.segment_free(scene.free, xy, p):
                return p
        return field.point(cells[0])

    def _plan(self, scene: Scene, start: np.ndarray, goals: list[Landmark]) -> bool:
        """Chain the distance fields back from the last goal; False if a goal is unreachable in order."""
        if not scene.is_free(start):
            return False
        geo: list[Field] = []
        steer: list[Field] = []
        for g in reversed(goals):
            region = scene.region(g, SUCCESS_DIST)
            aim = scene.region(g, EXPERT_DIST)
            if region.size == 0:
                return False
            aim = aim if aim.size else region
            geo.insert(0, scene.planner.field(region, geo[0].dist[region] if geo else None))
            steer.insert(0, scene.planner.field(aim, steer[0].dist[aim] if steer else None, weighted=True))
        if not (np.isfinite(geo[0].value(start)) and np.isfinite(steer[0].value(start))):
            return False
        self._geo, self._steer = geo, steer
        self.shortest_path_length = self._shortest_length(scene, start)
        return True

    def _shortest_length(self, scene: Scene, start: np.ndarray) -> float:
        """Length of the shortest route through the subgoals: grid path legs, string-pulled."""
        total, xy = 0.0, np.asarray(start, dtype=np.float64)
        for field in self._geo:
            pts = np.array([xy] + [field.point(i) for i in field.path(xy)])
            total += smoothed_length(scene.grid, scene.free, pts)
            xy = pts[-1]
        return total


class NavExpert(Expert):
    """Follow the planner's path (kept clear of obstacles) with a lookahead tracker.

    Each step it reads the distance field of the current goal, which covers every cell, so it
    needs no replanning after a detour. Discrete: turn towards the waypoint until it lies within
    half a turn step, then go forward; call ``stop`` within the success distance of the last goal.
    Continuous: turn rate proportional to the heading error, speed falling with it.

    ``noise``: continuous mode adds Gaussian noise (the base class); discrete mode replaces the
    action, with probability ``noise``, by a random move (never ``stop``).
    """

    def __init__(self, task: NavTask, noise: float = 0.0, seed: int | None = None) -> None:
        super().__init__(task, noise=noise, seed=seed)
        self.robot = task.env.robot

    def act(self, obs: dict[str, Any], info: dict[str, Any]):
        if not self.robot.discrete:
            return super().act(obs, info)
        action = self.last_plan = int(self.plan(obs, info))
        if self.noise > 0 and action != STOP and self._noise_rng.random() < self.noise:
            action = int(self._noise_rng.integers(FORWARD, RIGHT + 1))
        return action

    def plan(self, obs: dict[str, Any], info: dict[str, Any]):
        task, robot = self.task, self.robot
        if robot.discrete and task.reached == len(task.goals) - 1 and task.within(task.current):
            return STOP
        to = task.waypoint(robot.xy) - robot.xy
        err = wrap(float(np.arctan2(to[1], to[0])) - robot.yaw)
        if robot.discrete:
            if abs(err) <= TURN_STEP / 2 + 1e-6:
                return FORWARD
            return LEFT if err > 0 else RIGHT
        turn = np.clip(err / (MAX_ANGULAR * robot.dt), -1.0, 1.0)
        speed = (
            0.0
            if abs(err) > np.pi / 3
            else np.cos(err) * min(1.0, np.linalg.norm(to) / (MAX_LINEAR * robot.dt))
        )
        return np.array([speed, turn], dtype=np.float32)
