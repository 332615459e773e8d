"""The environment core: a robot, a task and a scene joined into one ``gymnasium.Env``.

* ``Robot`` turns normalised actions into motion and reports proprioception.
* ``Task`` builds the objects, samples the instruction, judges success and brings its expert.
* ``RobotTaskEnv`` owns the ``Simulation`` (one PyBullet client), the cameras and lighting,
  validates actions and assembles observations.

Every random draw flows from Gymnasium's seed: ``reset`` hands ``self.np_random`` to the task.
"""

from __future__ import annotations

import abc
import numbers
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vlagym.envs.labels import RoleTarget, View, compute_labels
from vlagym.envs.perturb import Perturber, parse_perturb
from vlagym.envs.sim import Camera, Lighting, Simulation

# Instructions are ASCII sentences; the Text space needs an explicit alphabet and bound.
INSTRUCTION_CHARSET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.'-"
MAX_INSTRUCTION_LEN = 160
# Privileged state holds positions (metres) and unit vectors; anything beyond is a bug.
STATE_BOUND = 100.0
# Camera resolution bounds: below 16 px nothing is recognisable (and the policies' encoders refuse it); above
# 512 a reset takes a minute and gigabytes (10000 px: 61 s, 5.2 GB per reset).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 512


def image_hw(image_size: Any) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair of ints, each within ``MIN_IMAGE_SIZE..MAX_IMAGE_SIZE``."""
    def ok(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if ok(image_size):
        pair: Any = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(ok(v) for v in image_size):
        pair = tuple(image_size)
    else:
        raise ValueError(f"image_size must be an int or a (height, width) pair of ints, got {image_size!r}")
    if not all(MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE for v in pair):
        raise ValueError(f"image_size must be within {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels, got {image_size!r}")
    return int(pair[0]), int(pair[1])


class Robot(abc.ABC):
    """A body the agent moves. Subclasses define ``action_space`` and ``proprio_space``."""

    action_space: spaces.Box
    proprio_space: spaces.Box

    @abc.abstractmethod
    def load(self, sim: Simulation, rng: np.random.Generator) -> None:
        """Add the robot to a freshly reset simulation."""

    @abc.abstractmethod
    def apply_action(self, action: np.ndarray) -> None:
        """Set motor targets for one control period (the env steps the physics)."""

    @abc.abstractmethod
    def proprio(self) -> np.ndarray:
        """Proprioception as float32, shaped like ``proprio_space``."""

    def cameras(self) -> dict[str, Camera]:
        """Cameras that ride on the robot, updated to the current pose (none by default)."""
        return {}

    def label_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """The frame privileged labels give positions in: origin (3,) and rotation (3, 3), axes as columns."""
        return np.zeros(3), np.eye(3)


class Expert(abc.ABC):
    """A scripted policy that reads privileged simulator state.

    Args:
        task: the task whose state the expert reads.
        noise: standard deviation of Gaussian noise added to the continuous action
            dimensions (in normalised units); the returned, executed action includes it,
            so recorded demonstrations show the recoveries it causes.
        seed: seeds the noise generator; ``None`` draws from the task's episode seed.

    ``last_plan`` holds the noiseless action behind the latest ``act`` (DART's label: datasets
    store it beside the executed action, so BC can learn the correction rather than the noise).
    """

    def __init__(self, task: Task, noise: float = 0.0, seed: int | None = None) -> None:
        if noise < 0:
            raise ValueError(f"expert noise must be >= 0, got {noise}")
        self.task = task
        self.noise = float(noise)
        self._noise_rng = np.random.default_rng(seed if seed is not None else task.episode_seed)
        self.last_plan: Any = None

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        action = np.asarray(self.plan(obs, info), dtype=np.float32)
        self.last_plan = np.clip(action, -1.0, 1.0).astype(np.float32)
        if self.noise > 0:
            action = action + self._noise_mask() * self._noise_rng.normal(0.0, self.noise, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _noise_mask(self) -> np.ndarray:
        """Which action dimensions receive noise (all continuous ones by default)."""
        return np.ones(self.task.env.action_space.shape, dtype=np.float32)

    @abc.abstractmethod
    def plan(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        """The noiseless action."""


class Task(abc.ABC):
    """Objects, instruction, success and expert of one task family.

    The object that samples the sentence is the object that checks it (BabyAI's
    ``surface``/``verify``): ``reset`` draws the goal and its wording from ``rng``,
    ``is_success`` judges the same goal from simulator state.
    """

    name: str = "task"
    max_steps: int = 100

    def __init__(self) -> None:
        self.env: RobotTaskEnv | None = None
        self.instruction: str = ""
        self.episode_seed: int | None = None

    @property
    def sim(self) -> Simulation:
        return self.env.sim

    @abc.abstractmethod
    def reset(self, rng: np.random.Generator) -> None:
        """Build the task's objects and set ``self.instruction``."""

    @abc.abstractmethod
    def is_success(self) -> bool: ...

    def info(self) -> dict[str, Any]:
        """Task facts reported every step (distances, grasp state, ...)."""
        return {}

    def dense_reward(self) -> float:
        """Shaped reward for RL; sparse success reward is used when this is not overridden."""
        return float(self.is_success())

    def state(self) -> np.ndarray:
        """Privileged low-dimensional state (for ``obs_mode='state'``); fixed length per task."""
        return np.zeros(0, dtype=np.float32)

    state_dim: int = 0

    # Roles the instruction names, in a fixed order (``vlagym.envs.labels``); the same every episode.
    label_roles: tuple[str, ...] = ()

    def role_targets(self) -> dict[str, RoleTarget]:
        """Where each of ``label_roles`` is now (a world point and the body that shows it)."""
        return {}

    @abc.abstractmethod
    def expert(self, noise: float = 0.0, seed: int | None = None) -> Expert: ...

    def unsolvable(self) -> str | None:
        """Why the task can no longer be solved from the current state (an object knocked off the
        table, say), or None. The expert hand-over check counts such states apart."""
        return None


class RobotTaskEnv(gym.Env):
    """Base environment: see the concrete environments' docstrings for the sections."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        robot: Robot,
        task: Task,
        cameras: dict[str, Camera],
        lighting: Lighting | None = None,
        obs_mode: str = "rgb",
        reward_type: str = "sparse",
        render_mode: str | None = None,
        control_hz: int = 10,
        perturb: float | dict | str | None = None,
        privileged_labels: bool = True,
    ) -> None:
        if obs_mode not in ("rgb", "state"):
            raise ValueError(f"obs_mode must be 'rgb' or 'state', got {obs_mode!r}")
        if reward_type not in ("sparse", "dense"):
            raise ValueError(f"reward_type must be 'sparse' or 'dense', got {reward_type!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.sim = Simulation(control_hz=control_hz)
        self.robot = robot
        self.task = task
        task.env = self
        self.cameras = cameras
        self.lighting = lighting or Lighting()
        self.obs_mode = obs_mode
        self.reward_type = reward_type
        self.render_mode = render_mode
        self.action_space = robot.action_space
        obs: dict[str, spaces.Space] = {}
        if obs_mode == "rgb":
            for key, cam in self.all_cameras().items():
                obs[key] = spaces.Box(0, 255, (cam.height, cam.width, 3), np.uint8)
        else:
            obs["state"] = spaces.Box(-STATE_BOUND, STATE_BOUND, (task.state_dim,), np.float32)
        obs["instruction"] = spaces.Text(MAX_INSTRUCTION_LEN, min_length=1, charset=INSTRUCTION_CHARSET)
        obs["proprio"] = robot.proprio_space
        self.observation_space = spaces.Dict(obs)
        self._last_obs: dict[str, Any] | None = None
        # Visual perturbations (``vlagym.envs.perturb``); none at strength 0, so the default renders
        # exactly as before.
        self.perturb = parse_perturb(perturb)
        self.perturber: Perturber | None = None
        # Where the instruction's roles are (``info["labels"]``); the masks come from the image renders.
        self.privileged_labels = bool(privileged_labels)
        self._views: dict[str, View] = {}

    def all_cameras(self) -> dict[str, Camera]:
        return {**self.cameras, **self.robot.cameras()}

    # --- gymnasium API ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.sim.reset()
        self.task.episode_seed = int(self.np_random.integers(2**31))
        self.build_scene(self.np_random)
        self.robot.load(self.sim, self.np_random)
        self.task.reset(self.np_random)
        self.draw_scenery()
        if self.perturb:
            # Drawn from the episode seed with generators of its own: np_random (the task's draws) is untouched.
            self.perturber = Perturber(self.perturb, self.task.episode_seed)
            self.perturber.apply(self)
        if len(self.task.instruction) > MAX_INSTRUCTION_LEN:
            raise RuntimeError(f"instruction longer than {MAX_INSTRUCTION_LEN} chars: {self.task.instruction!r}")
        self._steps = 0
        self._terminated = False
        obs = self._observe()
        return obs, self._info()

    def step(self, action):
        action = self._check_action(action)
        self.robot.apply_action(action)
        self.sim.step()
        self._steps += 1
        success = self.task.is_success()
        reward = self.task.dense_reward() if self.reward_type == "dense" else float(success)
        obs = self._observe()
        self._terminated = bool(success)
        return obs, float(reward), bool(success), False, self._info(success)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._last_obs is not None and "rgb" in self._last_obs:
            return self._last_obs["rgb"]
        cam = next(iter(self.cameras.values()))
        return self.sim.render(cam, self.lighting)

    def close(self) -> None:
        self.sim.close()

    # --- hooks --------------------------------------------------------------------------------------------
    def build_scene(self, rng: np.random.Generator) -> None:
        """Static scenery (floor, table, rooms); called before the robot loads."""

    def draw_scenery(self) -> None:
        """Visual-only bodies of the scenery (``Simulation.create_visual``), added after the robot and the task's
        objects so that TinyRenderer shades the far surfaces only where they show (none by default)."""

    def scenery(self) -> dict[str, list[str]]:
        """Body names of the scenery surfaces by role ("table", "floor", "wall"), for perturbations."""
        return {}

    def spawn_ghosts(self, rng: np.random.Generator, n: int) -> list[str]:
        """Add ``n`` visual-only distractors (no collision: the task's state is unaffected); returns
        their descriptions. Envs without a notion of distractors add none."""
        return []

    # --- internals ----------------------------------------------------------------------------------------
    def _check_action(self, action) -> np.ndarray:
        if not hasattr(self, "_steps"):
            raise RuntimeError("call reset() before step()")
        if self._terminated:
            raise RuntimeError(f"{type(self).__name__}: step() called after the episode was terminated (at step "
                               f"{self._steps}); call reset() first")
        if isinstance(self.action_space, spaces.Discrete):
            # Python and numpy integers and 0-d integer arrays; not bools, floats or strings ("1", True, 1.0).
            n = self.action_space.n
            if isinstance(action, np.ndarray):
                if action.shape != ():
                    raise ValueError(f"expected a scalar discrete action, got shape {action.shape}")
                if not np.issubdtype(action.dtype, np.integer):
                    raise ValueError(f"discrete action must be an integer in 0..{n - 1}, got {action!r}")
                action = int(action.item())
            elif isinstance(action, numbers.Integral) and not isinstance(action, bool):
                action = int(action)
            else:
                raise ValueError(f"discrete action must be an integer in 0..{n - 1}, got {action!r} "
                                 f"({type(action).__name__})")
            if not self.action_space.contains(action):
                raise ValueError(f"action {action} outside Discrete({n})")
            return action
        arr = np.asarray(action, dtype=np.float64)
        if arr.shape != self.action_space.shape:
            raise ValueError(
                f"action has shape {arr.shape}, expected {self.action_space.shape} "
                f"(see {type(self).__name__}'s Action section)"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"action contains NaN or inf: {arr.tolist()}")
        low, high = self.action_space.low, self.action_space.high
        if not getattr(self, "_warned_clip", False) and np.any((arr < low) | (arr > high)):
            self._warned_clip = True
            warnings.warn(f"{type(self).__name__}: action {np.round(arr, 3).tolist()} lies outside the action "
                          f"space [{low.min():g}, {high.max():g}] and is clipped (warned once per env)",
                          stacklevel=3)
        return np.clip(arr, low, high).astype(np.float32)

    def _observe(self) -> dict[str, Any]:
        obs: dict[str, Any] = {}
        if self.obs_mode == "rgb":
            for key, cam in self.all_cameras().items():
                obs[key] = self._render(key, cam)
        else:
            obs["state"] = self.task.state().astype(np.float32)
        obs["instruction"] = self.task.instruction
        obs["proprio"] = self.robot.proprio().astype(np.float32)
        self._last_obs = obs
        return obs

    def _render(self, key: str, cam: Camera) -> np.ndarray:
        p = self.perturber
        lighting = self.lighting
        if p is not None:
            if key == "rgb":
                p.place_occluder(self, cam)
            cam, lighting = p.camera(cam), p.lighting
        if not self.privileged_labels:
            rgb = self.sim.render(cam, lighting)
        else:
            rgb, seg = self.sim.render(cam, lighting, segmentation=True)
            self._views[key] = View(tuple(cam._view), tuple(cam._proj), seg)
        return rgb if p is None else p.postprocess(rgb)

    def labels(self) -> dict[str, np.ndarray]:
        """The privileged labels of the latest frame (``vlagym.envs.labels``)."""
        roles = self.task.role_targets()
        views = dict(self._views) if self.obs_mode == "rgb" else {}
        return compute_labels(roles, self.sim.bodies, self.robot.label_frame(), views)

    def _info(self, success: bool | None = None) -> dict[str, Any]:
        if success is None:
            success = self.task.is_success()
        info = {"success": bool(success), "task": self.task.name, "instruction": self.task.instruction,
                **self.task.info()}
        if self.privileged_labels and self.task.label_roles:
            info["labels"] = self.labels()
        return info


class EndOfEpisode(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Refuses ``step`` once the episode terminated or was truncated, until ``reset``.

    Registered ids add it outside Gymnasium's ``TimeLimit`` (``additional_wrappers``), so a step past the
    step limit fails as loudly as one past a success; vector envs' autoreset and SB3 reset before stepping.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._ended: str | None = None

    def reset(self, **kwargs):
        self._ended = None
        return self.env.reset(**kwargs)

    def step(self, action):
        if self._ended is not None:
            raise RuntimeError(f"{self.unwrapped.spec.id if self.unwrapped.spec else type(self.unwrapped).__name__}"
                               f": step() called after the episode was {self._ended}; call reset() first")
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self._ended = "terminated" if terminated else "truncated (its step limit)"
        return obs, reward, terminated, truncated, info
