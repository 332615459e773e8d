"""Push: "push the red cube to the left side of the table". Non-prehensile manipulation.

The target is a cube (any colour, either size). Regions are parts of the table as seen from the
front camera (at x ~ 1 looking back at the robot): left is y < -0.15 (image-left is world -y),
right is y > 0.15, front is x > 0.60 (near the camera) and back is x < 0.36 (near the robot).
The target always starts at least ``START_MARGIN`` outside its region: the region is drawn
after placement, among those the target stands clear of.

Success: the target's centre is inside the region and the target touches the table top and is
not held (not lifted, not in a bowl, not pushed off the edge).
Dense reward: ``-0.5 * |fingertips - push point| - 2 * target_distance`` plus 1 on success, where
the push point is where a push starts (just clear of the target on the side away from the
region, at push height) and ``target_distance`` is how far the target's centre is from the
region (0 inside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vlagym.envs.labels import RoleTarget
from vlagym.envs.registry import register_task
from vlagym.envs.tabletop.expert import CLOSE, HOVER, TabletopExpert, wrap
from vlagym.envs.tabletop.task import TabletopTask

START_MARGIN = 0.06  # how far outside its region the target starts, at least (metres)
PUSH_Z = 0.015  # fingertip height while pushing: the closed fingers reach 7 mm below it
LIFT_CLEAR = 0.12  # fingertip height once the object is through
TIPPED = 0.01  # the target's centre this far above its resting height: it leans on an edge
FINGER_HALF = 0.009  # half the closed fingers' thickness along the push, at their tips
PUSH_CLEARANCE = 0.025  # gap between the fingertips and the target's footprint before a push
HELD_WIDTH = 0.02  # finger opening above which both fingers touching the target is a grasp


@dataclass(frozen=True)
class Region:
    """The half of the table where ``sign * (xy[axis] - bound) > 0``."""

    axis: int
    sign: float
    bound: float

    @property
    def direction(self) -> np.ndarray:
        """Unit vector in the table plane pointing into the region."""
        d = np.zeros(2)
        d[self.axis] = self.sign
        return d

    def depth(self, xy) -> float:
        """Signed distance of ``xy`` into the region (negative outside)."""
        return float(self.sign * (xy[self.axis] - self.bound))


REGIONS = {
    "left": Region(axis=1, sign=-1.0, bound=-0.15),
    "right": Region(axis=1, sign=1.0, bound=0.15),
    "front": Region(axis=0, sign=1.0, bound=0.60),
    "back": Region(axis=0, sign=-1.0, bound=0.36),
}


@register_task("tabletop", "Push")
class PushTask(TabletopTask):
    name = "push"
    max_steps = 100
    templates = (
        "push the {obj} to the {side} side of the table",
        "slide the {obj} to the {side}",
        "move the {obj} over to the {side} side",
        "push the {obj} toward the {side} of the table",
        "shove the {obj} over to the {side}",
        "nudge the {obj} to the {side} side of the table",
    )

    def sample(self, rng: np.random.Generator):
        # The region and the sentence wait for the placement (see ``reset``).
        return [self.random_spec(rng, shapes=("cube",), target=True)], ""

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        xy = self.sim.position(self.name_of(0))[:2]
        # Left and right (front and back) exclude each other, so some region is always clear.
        clear = [name for name, region in REGIONS.items() if region.depth(xy) <= -START_MARGIN]
        self.side = clear[rng.integers(len(clear))]
        self.region = REGIONS[self.side]
        self.instruction = self.phrase(rng, obj=self.objects[0].words(), side=self.side)

    def held(self) -> bool:
        # Closed fingers pushing a face touch it with both links too; a grasp holds them apart.
        return self.grasped(0) and self.env.robot.finger_width() > HELD_WIDTH

    def on_table(self) -> bool:
        """Touching the table top and not held: not lifted, not in a bowl, not pushed off the edge."""
        return self.sim.in_contact(self.name_of(0), "table") and not self.held()

    def target_distance(self) -> float:
        return max(0.0, -self.region.depth(self.sim.position(self.name_of(0))))

    def is_success(self) -> bool:
        return self.region.depth(self.sim.position(self.name_of(0))) > 0 and self.on_table()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "region": self.side, "target_distance": self.target_distance()}

    label_roles = ("object", "destination")

    def destination(self) -> np.ndarray:
        """The region's point nearest the target, ``START_MARGIN`` inside it, at the target's height."""
        pos = self.sim.position(self.name_of(0))
        depth = START_MARGIN - self.region.depth(pos)
        return np.array([*(pos[:2] + max(depth, 0.0) * self.region.direction), pos[2]])

    def role_targets(self):
        return {"object": self.role_of(0), "destination": RoleTarget(self.destination(), None)}

    def push_point(self) -> np.ndarray:
        """Where the fingertips start a push: clear of the target, on its side away from the region."""
        pos = self.sim.position(self.name_of(0))
        standoff = self.objects[0].footprint + PUSH_CLEARANCE
        return np.array([*(pos[:2] - standoff * self.region.direction), PUSH_Z])

    def dense_reward(self) -> float:
        reach = float(np.linalg.norm(self.ee() - self.push_point()))
        return -0.5 * reach - 2.0 * self.target_distance() + float(self.is_success())

    def expert(self, noise: float = 0.0, seed: int | None = None) -> PushExpert:
        return PushExpert(self, noise=noise, seed=seed)


class PushExpert(TabletopExpert):
    """Push with closed fingers at the object's base, re-approaching whenever it gets away.

    Phases: above (hover over the push point, the fingers' broad side turned to the object's
    back face) -> descend -> push (advance while steering the fingertips back behind the
    object's centre) -> lift when it slipped aside or tipped, and from lift back to above.
    Pushing stops once the object is ``OVERSHOOT`` past the boundary. The phase is read from
    the state at every step: the fingertips low behind the object's centre push; over the
    push point and turned they descend; low anywhere else they lift.
    """

    OVERSHOOT = 0.03
    LEAD = 0.02  # how far ahead of the contact the fingertips aim: the push's stiffness
    SPEED = 0.5  # fraction of the arm's top speed while pushing: faster pushes fling the object

    def plan(self, obs, info) -> np.ndarray:
        task: PushTask = self.task
        d = task.region.direction
        normal = np.array([-d[1], d[0]])
        spec = task.objects[0]
        pos, _ = self.obj(0)
        ee, _ = self.ee()
        rel = ee[:2] - pos[:2]
        along, lateral = float(rel @ d), float(rel @ normal)
        behind = task.push_point()[:2]
        yaw = self.push_yaw(d)

        if task.region.depth(pos) > self.OVERSHOOT:
            self.phase = "done"
            return self.move_to([ee[0], ee[1], LIFT_CLEAR], None, CLOSE)
        # Re-approach when the fingertips are no longer behind the centre, or the object has
        # tipped onto an edge against them (letting go lays it flat again).
        slipped = abs(lateral) > 0.7 * spec.half or along > -0.5 * spec.half
        # Tipped against the fingers: lift and let it fall flat. Tipped and resting on its own (on
        # an edge, against a neighbour) it is pushed as it is, which usually lays it flat.
        tipped = pos[2] - spec.half > TIPPED and task.touching(0)
        behind_centre = not (slipped or tipped)
        if behind_centre and ee[2] < PUSH_Z + 0.008:
            self.phase = "push"
        elif (behind_centre and np.linalg.norm(ee[:2] - behind) < 0.02 and self.yaw_near(yaw, 0.1)
              and ee[2] < spec.height + HOVER / 2 + 0.02):
            self.phase = "descend"
        elif ee[2] < spec.height + 0.03:
            self.phase = "lift"
        else:
            self.phase = "above"
        if self.phase == "lift":
            return self.move_to([ee[0], ee[1], spec.height + HOVER], None, CLOSE)
        if self.phase == "above":
            target = np.array([*behind, spec.height + HOVER / 2])
            if self.near(target, 0.02) and self.yaw_near(yaw, 0.1):
                self.phase = "descend"
            else:
                return self.move_to(target, yaw, CLOSE)
        if self.phase == "descend":
            if ee[2] < PUSH_Z + 0.008:
                self.phase = "push"
            else:
                return self.move_to([*behind, PUSH_Z], yaw, CLOSE)
        # push: aim ahead of the contact point along d, on the line through the object's centre.
        target = pos[:2] - d * (spec.half + FINGER_HALF) + d * self.LEAD
        action = self.move_to([*target, PUSH_Z], yaw, CLOSE)
        action[:3] = np.clip(action[:3], -self.SPEED, self.SPEED)
        return action

    def push_yaw(self, d: np.ndarray) -> float:
        """Gripper yaw that lays the closed fingers' broad side flush on the cube's back face.

        The fingers taper towards their tips, so they meet a cube corner at its top edge and
        tip it over; flat on a face they press along its height.
        """
        a = float(np.arctan2(d[1], d[0]))
        _, obj_yaw = self.obj(0)
        face = min((wrap(obj_yaw + k * np.pi / 2) for k in range(4)), key=lambda y: abs(wrap(y - a)))
        _, cur = self.ee()
        return min((face, wrap(face + np.pi)), key=lambda y: abs(wrap(y - cur)))
