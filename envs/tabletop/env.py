"""The tabletop environment: a Franka Panda at a table with procedural objects."""

from __future__ import annotations

import numpy as np
import pybullet as pb

from vlagym.envs.core import RobotTaskEnv, image_hw
from vlagym.envs.sim import Camera, Lighting
from vlagym.envs.tabletop.objects import COLORS, GRASPABLE, SIZES, ObjectSpec
from vlagym.envs.tabletop.panda import Panda
from vlagym.envs.tabletop.tasks import TASKS, make_task

TABLE_COLOR = (0.72, 0.58, 0.42, 1.0)
FLOOR_COLOR = (0.45, 0.45, 0.48, 1.0)
# (name, colour, centre, half extents) of the static boxes, in the order their collision bodies are made.
SCENERY = (("floor", FLOOR_COLOR, (0.0, 0.0, -0.76), (3.0, 3.0, 0.01)),
           ("table", TABLE_COLOR, (0.35, 0.0, -0.025), (0.45, 0.55, 0.025)))
# Where ghost distractors stand: the task's region widened towards the table's sides.
GHOST_REGION = np.array([[0.28, -0.38], [0.72, 0.38]])


class TabletopEnv(RobotTaskEnv):
    """Language-conditioned tabletop manipulation with a Franka Panda.

    ## Description
    A Panda stands at the edge of a table (its base at the origin, facing +x; the table
    top is z = 0). Two to five procedural objects (cubes, cylinders, bowls in eight
    colours and two sizes) stand on the table without overlapping. The task names one of
    them in a sentence. Physics runs at 240 Hz; the agent acts at 10 Hz.

    ## Instruction
    ``obs["instruction"]`` is drawn from the task's paraphrase templates, for example
    "pick up the red cube". Spatial words ("left side of the table") are as seen from
    the front camera, the way a person standing there would say them. Every object
    phrase names exactly one object in the scene.

    ## Observation
    ``spaces.Dict`` with ``"rgb"`` (uint8, H x W x 3) from a fixed front camera facing the
    robot, ``"rgb_wrist"`` when ``wrist_camera=True``, ``"instruction"`` (``spaces.Text``) and
    ``"proprio"`` (float32, 6: end-effector x, y, z, sin and cos of gripper yaw, finger
    opening). With ``obs_mode="state"`` the images are replaced by ``"state"``: the
    objects' poses (5 slots of x, y, z, sin yaw, cos yaw, present), the task's objects first.

    ## Action
    ``Box(-1, 1, (5,), float32)``: ``(dx, dy, dz, dyaw, gripper)``. Position deltas scale to
    at most 4 cm per step, yaw to 0.25 rad; the gripper closes when ``gripper >= 0``.
    Wrong shapes and NaN raise ``ValueError``. Values outside [-1, 1] are clipped to it; the first
    clipped action of an env raises a ``UserWarning`` (once per env, so a policy that overshoots is
    seen without flooding the log). ``step`` after the episode terminated (success) or was truncated
    (the step limit) raises ``RuntimeError``: call ``reset``.

    ## Reward
    Sparse: 1.0 on the step the task succeeds, else 0. ``reward_type="dense"`` gives the
    task's shaped reward (documented in each task's file).

    ## Termination
    Terminates on success; truncates at the task's step limit (through Gymnasium's
    ``TimeLimit``, set at registration). ``info["success"]`` is reported every step.

    ## Registered ids
    One per task in ``envs/tabletop/tasks/`` (``vlagym/Tabletop<Task>-v0``, registered by the task's
    ``@register_task``); ``vlagym.envs.TABLETOP_IDS`` and ``vlagym envs`` list them.

    Args:
        task: task name, one of ``TASKS``.
        image_size: camera resolution (height, width) or one int for square images; ints within 16..512
            (``MIN_IMAGE_SIZE``/``MAX_IMAGE_SIZE`` in ``vlagym.envs.core``), else ``ValueError``.
        wrist_camera: also render ``"rgb_wrist"`` from the hand.
        lighting: a ``Lighting``, or a dict of its fields.
        obs_mode: ``"rgb"`` (images) or ``"state"`` (privileged object poses, no rendering).
        reward_type: ``"sparse"`` or ``"dense"``.
        num_distractors: ``(low, high)`` distractor count, or an int; the task's default when None. At
            most ``MAX_OBJECTS`` (5) objects fit the table, the task's own included: a higher count is
            refused with the task's cap (3 for place, stack and touch's L5 composition, else 4).
        render_mode: ``None`` or ``"rgb_array"`` (returns the front camera image).
        level: generalization level (``vlagym.envs.levels``: ``"train"``, ``"L1"`` ... ``"L5"``); None
            draws from all of them.
        perturb: visual perturbations (``vlagym.envs.perturb``): a strength in [0, 1] for all of them,
            a dict or ``"name=strength,..."``; None or 0 renders the training conditions.
        privileged_labels: report ``info["labels"]``, where the instruction's roles are (per camera pixel
            position and visibility, position in the robot's frame; ``vlagym.envs.labels``).
    """

    def __init__(
        self,
        task: str = "touch",
        image_size: int | tuple[int, int] = 128,
        wrist_camera: bool = False,
        lighting: Lighting | dict | None = None,
        obs_mode: str = "rgb",
        reward_type: str = "sparse",
        num_distractors: tuple[int, int] | int | None = None,
        render_mode: str | None = None,
        level: str | None = None,
        perturb: float | dict | str | None = None,
        privileged_labels: bool = True,
    ) -> None:
        h, w = image_hw(image_size)
        if isinstance(lighting, dict):
            lighting = Lighting(**lighting)
        front = Camera(eye=(0.98, 0.0, 0.8), target=(0.42, 0.0, 0.05), fov=46.0, width=w, height=h)
        super().__init__(
            robot=Panda(wrist_camera=wrist_camera, image_size=(h, w)),
            task=make_task(task, num_distractors=num_distractors, level=level),
            cameras={"rgb": front},
            lighting=lighting,
            obs_mode=obs_mode,
            reward_type=reward_type,
            render_mode=render_mode,
            perturb=perturb,
            privileged_labels=privileged_labels,
        )

    def build_scene(self, rng: np.random.Generator) -> None:
        # Collision only: their looks come in draw_scenery, after the robot and the objects (a third of the
        # render at 96 px; the image is byte for byte the same).
        for name, rgba, pos, half in SCENERY:
            self.sim.create_primitive(name, pb.GEOM_BOX, rgba, pos, halfExtents=half, visual=False)

    def draw_scenery(self) -> None:
        for name, rgba, pos, half in SCENERY[::-1]:  # the table before the floor it hides
            self.sim.create_visual(f"{name}_visual", pb.GEOM_BOX, rgba, pos, halfExtents=half)

    def scenery(self) -> dict[str, list[str]]:
        return {"table": ["table_visual"], "floor": ["floor_visual"]}

    def spawn_ghosts(self, rng: np.random.Generator, n: int) -> list[str]:
        """Visual-only cubes and cylinders on the table, clear of the real objects; their colour and
        shape are never those of a real object, so every phrase still names exactly one thing."""
        taken = {(o.color, o.shape) for o in self.task.objects}
        real = [(self.sim.position(self.task.name_of(i))[:2], o.footprint) for i, o in enumerate(self.task.objects)]
        c, out = self.sim.client, []
        for k in range(n):
            choices = [(col, shp) for col in COLORS for shp in GRASPABLE if (col, shp) not in taken]
            color, shape = choices[int(rng.integers(len(choices)))]
            spec = ObjectSpec(shape, color, str(rng.choice(SIZES)))
            for _ in range(100):
                xy = rng.uniform(GHOST_REGION[0], GHOST_REGION[1])
                if all(np.linalg.norm(xy - p) > r + spec.footprint + 0.02 for p, r in real):
                    break
            else:
                continue  # no room left on the table
            taken.add((color, shape))
            real.append((xy, spec.footprint))
            if shape == "cube":
                vis = c.createVisualShape(pb.GEOM_BOX, halfExtents=[spec.half] * 3, rgbaColor=COLORS[color])
            else:
                vis = c.createVisualShape(pb.GEOM_CYLINDER, radius=spec.half, length=spec.height,
                                          rgbaColor=COLORS[color])
            orn = pb.getQuaternionFromEuler([0, 0, float(rng.uniform(-np.pi, np.pi))])
            body = c.createMultiBody(0, -1, vis, basePosition=[xy[0], xy[1], spec.height / 2], baseOrientation=orn)
            self.sim.add(f"ghost{k}", body)
            out.append(spec.words(with_size=True))
        return out


__all__ = ["TASKS", "TabletopEnv"]
