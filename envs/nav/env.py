"""The navigation environment: a differential-drive robot in procedural indoor rooms."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from vlagym.envs.core import RobotTaskEnv, image_hw
from vlagym.envs.nav.objects import Landmark, spawn_landmark
from vlagym.envs.nav.robot import STOP, DiffDriveRobot
from vlagym.envs.nav.scene import Scene
from vlagym.envs.nav.task import ALL_KEYS, SUCCESS_DIST
from vlagym.envs.nav.tasks import TASKS, make_task
from vlagym.envs.nav.topdown import TopDownMap


class NavEnv(RobotTaskEnv):
    """Language-conditioned indoor navigation with a differential-drive robot.

    ## Description
    One to four connected rooms (3-5 m each, laid out 1x1, 1x2, 1x3, as an L or 2x2) joined by
    doorways, with furniture (tables, shelves, cabinets, sofas) and coloured landmark objects
    (cubes, balls, cones, cylinders, boxes in seven colours) on the floor. Each room has a closed
    door of its own colour on an outside wall. The layout, sizes, floor and wall colours,
    furniture, landmarks and lighting all come from the seed. The robot is a disc of radius
    0.18 m that moves kinematically and slides along obstacles; the agent acts at 10 Hz.

    ## Instruction
    ``obs["instruction"]`` names the goal by colour and shape, as drawn from the task's paraphrase
    templates: "go to the red ball" (``object_goal``), "go to the blue box next to the shelf" or
    "... in the room with the yellow door" (``relational_goal``), "go to the red ball, then the
    yellow cube" (``multi_step``). Every phrase picks out exactly one object in the scene.

    ## Observation
    ``spaces.Dict`` with ``"rgb"`` (uint8, H x W x 3) from the robot's camera (0.6 m high, tilted
    down 10 deg, ``hfov`` degrees wide), ``"instruction"`` (``spaces.Text``) and ``"proprio"``
    (float32, 6: x, y, sin yaw, cos yaw, linear velocity m/s, angular velocity rad/s). With
    ``top_down_map=True`` also ``"rgb_map"``: a map of the scene drawn from above with the robot
    and the current goal's success circle. With ``obs_mode="state"`` the camera image is replaced
    by ``"state"`` (float32, 18): for up to three goals in visiting order, their x, y in the robot
    frame, distance to their surface, reached and present flags; then the direction to the
    planner's next waypoint (x, y in the robot frame, unit length) and the geodesic distance left.

    ## Action
    ``action_mode="discrete"``: ``Discrete(4)``: 0 stop, 1 forward 0.25 m, 2 turn left 15 deg,
    3 turn right 15 deg. ``action_mode="continuous"``: ``Box(-1, 1, (2,), float32)``: linear and
    angular velocity, scaled to 1 m/s and 2 rad/s. Wrong shapes, NaN, unknown discrete actions and
    discrete actions that are not integers (``"1"``, ``True``, ``1.0``; numpy integers and 0-d integer
    arrays are fine) raise ``ValueError``; continuous values outside [-1, 1] are clipped, with a warning
    once per env. ``step`` after the episode terminated or was truncated raises ``RuntimeError``.

    ## Reward
    Sparse: 1.0 on the step the task succeeds, else 0. ``reward_type="dense"``: the decrease of the
    geodesic distance left (m), -0.01 per step, +2.5 on success.

    ## Termination
    Success is the robot's centre within 0.5 m of the goal object's footprint (each subgoal in
    order, for ``multi_step``). Continuous mode terminates on success. Discrete mode succeeds only
    when ``stop`` is called there, and ``stop`` always terminates, successful or not. Truncates at
    the task's step limit (Gymnasium's ``TimeLimit``, set at registration). ``info`` reports
    ``"success"``, ``"distance_to_goal"`` (m, to the current goal's surface),
    ``"geodesic_distance_to_goal"``, ``"shortest_path_length"`` (from the start through all
    subgoals, on the planner's grid), ``"path_length"`` (travelled so far), ``"subgoals_reached"``
    and ``"collided"``.

    ## Registered ids
    One per task in ``envs/nav/tasks/`` (``vlagym/Nav<Task>-v0``, its step limit the task's ``max_steps``);
    ``vlagym.envs.NAV_IDS`` and ``vlagym envs`` list them.

    Args:
        task: task name, one of ``TASKS``.
        action_mode: ``"discrete"`` or ``"continuous"``.
        image_size: camera resolution (height, width) or one int for square images; ints within 16..512
            (``MIN_IMAGE_SIZE``/``MAX_IMAGE_SIZE`` in ``vlagym.envs.core``), else ``ValueError``.
        hfov: horizontal field of view in degrees.
        top_down_map: also return ``"rgb_map"``.
        map_size: side of the square map in pixels (default: the image height).
        num_rooms: ``(low, high)`` number of rooms, or an int.
        obs_mode: ``"rgb"`` (images) or ``"state"`` (privileged goal vectors, no rendering).
        reward_type: ``"sparse"`` or ``"dense"``.
        render_mode: ``None`` or ``"rgb_array"`` (returns the robot's camera image).
        level: generalization level (``vlagym.envs.levels``: ``"train"``, ``"L1"`` ... ``"L5"``); None
            draws from all of them.
        perturb: visual perturbations (``vlagym.envs.perturb``): a strength in [0, 1] for all of them,
            a dict or ``"name=strength,..."``; None or 0 renders the training conditions.
        privileged_labels: report ``info["labels"]``, where the instruction's roles are (per camera pixel
            position and visibility, position in the robot's frame; ``vlagym.envs.labels``).
        **task_kwargs: passed to the task (``num_distractors``; ``num_goals`` for ``multi_step``).
    """

    def __init__(
        self,
        task: str = "object_goal",
        action_mode: str = "discrete",
        image_size: int | tuple[int, int] = 128,
        hfov: float = 90.0,
        top_down_map: bool = False,
        map_size: int | None = None,
        num_rooms: tuple[int, int] | int = (1, 4),
        obs_mode: str = "rgb",
        reward_type: str = "sparse",
        render_mode: str | None = None,
        level: str | None = None,
        perturb: float | dict | str | None = None,
        privileged_labels: bool = True,
        **task_kwargs: Any,
    ) -> None:
        h, w = image_hw(image_size)
        lo, hi = (num_rooms, num_rooms) if isinstance(num_rooms, int) else tuple(num_rooms)
        if not 1 <= lo <= hi <= 4:
            raise ValueError(
                f"num_rooms must be within 1..4 (an int or a (low, high) pair), got {num_rooms!r}"
            )
        self.num_rooms = (lo, hi)
        self.action_mode = action_mode
        robot = DiffDriveRobot(action_mode, image_size=(h, w), hfov=hfov)
        super().__init__(
            robot=robot,
            task=make_task(task, level=level, **task_kwargs),
            cameras={"rgb": robot.camera},  # the robot re-aims it every step (``robot.cameras()``)
            obs_mode=obs_mode,
            reward_type=reward_type,
            render_mode=render_mode,
            perturb=perturb,
            privileged_labels=privileged_labels,
        )
        self.map = TopDownMap(map_size or h) if top_down_map else None
        if self.map is not None:
            self.observation_space = spaces.Dict(
                {
                    **self.observation_space.spaces,
                    "rgb_map": spaces.Box(0, 255, (self.map.size, self.map.size, 3), np.uint8),
                }
            )
        self.scene: Scene | None = None

    def build_scene(self, rng: np.random.Generator) -> None:
        self.scene = Scene.generate(rng, self.num_rooms)
        self.scene.build(self.sim)
        self.lighting = self.scene.lighting
        self.robot.scene = self.scene
        self._map_ready = False

    def scenery(self) -> dict[str, list[str]]:
        names = list(self.sim.bodies)
        return {"floor": [n for n in names if n.startswith("floor")],
                "wall": [n for n in names if n == "walls" or n.startswith("walls_")]}

    def spawn_ghosts(self, rng: np.random.Generator, n: int) -> list[str]:
        """Visual-only landmarks on free floor, clear of the real ones and the robot; their colour and
        shape are never a real landmark's. They are not on the occupancy grid: the robot drives
        through them, and the task, its planner and its expert never see them."""
        scene = self.scene
        taken = {lm.key for lm in scene.landmarks}
        keep = [(np.asarray(lm.xy), lm.radius) for lm in scene.landmarks] + [(self.robot.xy, 0.6)]
        out = []
        for k in range(n):
            color, shape = _free_key(rng, taken)
            lm = Landmark(color, shape, yaw=float(rng.uniform(-np.pi, np.pi)))
            cand = np.flatnonzero(scene.landmark_spots(lm.radius))
            pts = scene.grid.centers.reshape(-1, 2)[cand]
            ok = np.ones(len(pts), bool)
            for xy, r in keep:
                ok &= np.hypot(*(pts - xy).T) >= r + lm.radius + 0.3
            if k == 0:  # the first stands in view of the start, 1-4 m ahead, where the camera sees it
                rel = pts - self.robot.xy
                bearing = (np.arctan2(rel[:, 1], rel[:, 0]) - self.robot.yaw + np.pi) % (2 * np.pi) - np.pi
                ahead = np.abs(bearing) < np.radians(30)
                dist = np.hypot(*rel.T)
                view = ok & ahead & (dist > 1.0) & (dist < 4.0)
                view[view] = [scene.grid.segment_free(scene.free, self.robot.xy, p) for p in pts[view]]
                ok = view if view.any() else ok
            if not ok.any():
                continue
            xy = pts[np.flatnonzero(ok)[rng.integers(ok.sum())]]
            lm.xy = (float(xy[0]), float(xy[1]))
            taken.add(lm.key)
            keep.append((xy, lm.radius))
            spawn_landmark(self.sim, f"ghost{k}", lm)
            out.append(lm.words())
        return out

    def step(self, action):
        action = self._check_action(action)
        self.robot.apply_action(action)
        self.sim.step()
        self._steps += 1
        stopped = self.robot.discrete and action == STOP
        self.task.update(stopped)
        success = self.task.is_success()
        reward = self.task.dense_reward() if self.reward_type == "dense" else float(success)
        obs = self._observe()
        self._terminated = bool(success or stopped)
        return obs, float(reward), bool(success or stopped), False, self._info(success)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._last_obs is not None and "rgb" in self._last_obs:
            return self._last_obs["rgb"]
        return self.sim.render(self.robot.cameras()["rgb"], self.lighting)

    def _observe(self) -> dict[str, Any]:
        obs = super()._observe()
        if self.map is not None:
            if not self._map_ready:
                self.map.reset(self.scene)
                self._map_ready = True
            goal = self.task.goals[self.task.current] if self.task.goals else None
            obs["rgb_map"] = self.map.draw(self.robot.xy, self.robot.yaw, goal, SUCCESS_DIST)
        return obs


def _free_key(rng: np.random.Generator, taken: set) -> tuple[str, str]:
    keys = [k for k in ALL_KEYS if k not in taken]
    return keys[int(rng.integers(len(keys)))]


__all__ = ["TASKS", "NavEnv"]
