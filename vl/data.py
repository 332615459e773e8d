"""Image-caption data from the tabletop environments (``vlagym vl-data``).

Each scene is a tabletop env reset on one seed, then changed with the same seed's generator: the arm
moves to a random pose (and opens or closes its gripper), and sometimes one graspable object is set
inside a bowl. Both cameras (the fixed front camera and the wrist camera) render the scene with
PyBullet's segmentation, which gives every object's visible pixels, mask and box. An image keeps the
objects with at least ``min_pixels`` visible pixels; its captions are rendered from facts that are
true of those objects (``vlagym.vl.captions``); images that see no object are skipped.

A dataset folder, written by the protocol of the demonstration datasets (``vlagym.dataio.staging``: atomic
files, one staged file per seed, resumable) in ``vlagym.dataio.samples`` shards::

    request.json           the settings (checked on resume)
    manifest.json          provenance, env ids, seed range, counts, wall time
    shard_00000.hdf5 ...   images (N, H, W, 3) uint8, masks (N, H, W) int8 (object index, -1 = none),
                           meta (N,) JSON strings: seed, env, camera, objects, facts, captions, referring
    staging/               one file per finished scene while a run is in progress

The dataset is the images of consecutive seeds from the split's start, up to ``images``; a resumed run
ends with the same images as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vlagym.core.io import atomic_write_text
from vlagym.core.splits import SPLIT_SEED_START, SPLIT_SIZE, split_of
from vlagym.dataio.samples import SHARD_GLOB, SUFFIX, count_samples, read_samples, write_samples
from vlagym.dataio.staging import Staging, shard_name
from vlagym.vl.captions import Fact, ObjectView, referring_expressions, true_facts

CAMERAS = ("rgb", "rgb_wrist")
BOWL_FLOOR = 0.008
# Where the random arm pose puts the fingertips: above the objects, inside the reachable workspace.
ARM_LOW = np.array([0.3, -0.25, 0.14])
ARM_HIGH = np.array([0.65, 0.25, 0.40])


@dataclass
class VLDataConfig:
    """What to render."""

    env: list[str]
    """Tabletop env ids; scene k uses env ``env[k % len(env)]``."""
    images: int
    """Images to keep (images that show no object are skipped)."""
    out: str
    """Dataset folder."""
    split: str = "train"
    """Seed split: train (from 0), val (1e6) or test (2e6); held-out evaluation uses another split."""
    image_size: int = 64
    """Camera resolution (square)."""
    cameras: tuple[str, ...] = CAMERAS
    """Which cameras to render: rgb (front), rgb_wrist."""
    p_in_bowl: float = 0.5
    """Chance that a scene with a bowl gets a graspable object set inside it."""
    min_pixels: int | None = None
    """Visible pixels an object needs to be mentioned (default: 0.15% of the image, at least 4)."""
    shard_size: int = 500
    """Images per shard."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra gym.make keyword arguments (lighting, num_distractors, ...)."""

    def __post_init__(self) -> None:
        from vlagym.envs import TABLETOP_IDS, check_env_id

        self.env = [self.env] if isinstance(self.env, str) else list(self.env)
        if not self.env:
            raise ValueError("vl-data needs at least one --env")
        for e in self.env:
            check_env_id(e)
            if e not in TABLETOP_IDS:
                raise ValueError(f"vl-data renders tabletop scenes; {e!r} is not one of {TABLETOP_IDS}")
        if self.images < 1:
            raise ValueError(f"images must be >= 1, got {self.images}")
        if self.split not in SPLIT_SEED_START:
            raise ValueError(f"split must be one of {sorted(SPLIT_SEED_START)}, got {self.split!r}")
        self.cameras = tuple(self.cameras)
        bad = [c for c in self.cameras if c not in CAMERAS]
        if bad or not self.cameras:
            raise ValueError(f"cameras must be a non-empty subset of {CAMERAS}, got {self.cameras!r}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if not 0.0 <= self.p_in_bowl <= 1.0:
            raise ValueError(f"p_in_bowl must be in [0, 1], got {self.p_in_bowl}")
        if self.min_pixels is None:
            self.min_pixels = max(4, round(0.0015 * self.image_size**2))

    @property
    def seed_start(self) -> int:
        return SPLIT_SEED_START[self.split]


# --- one scene ----------------------------------------------------------------------------------------------------
def make_scene_env(env_id: str, image_size: int, cameras: tuple[str, ...], **kwargs):
    import gymnasium as gym

    return gym.make(env_id, image_size=image_size, wrist_camera="rgb_wrist" in cameras, **kwargs).unwrapped


def arrange_scene(env, seed: int, p_in_bowl: float = 0.5) -> None:
    """Reset ``env`` on ``seed``, move the arm to a random pose and maybe set an object in a bowl."""
    from vlagym.envs.tabletop.panda import ARM_JOINTS, FINGER_JOINTS, FINGER_OPEN

    env.reset(seed=seed)
    rng = np.random.default_rng([seed, 8])
    robot, sim, task = env.robot, env.sim, env.task
    c = sim.client
    pos = rng.uniform(ARM_LOW, ARM_HIGH)
    yaw = float(rng.uniform(-np.pi / 2, np.pi / 2))
    closed = bool(rng.random() < 0.3)
    for _ in range(3):
        q = robot._ik(pos, yaw)
        for j, qj in zip(ARM_JOINTS, q[:7]):
            c.resetJointState(robot.id, j, qj)
    for j in FINGER_JOINTS:
        c.resetJointState(robot.id, j, 0.0 if closed else FINGER_OPEN)
    robot.target_pos, robot.target_yaw, robot.gripper_closed = pos, yaw, closed
    robot._hold()
    bowls = [i for i, s in enumerate(task.objects) if s.shape == "bowl"]
    items = [i for i, s in enumerate(task.objects) if s.shape != "bowl"]
    if bowls and items and rng.random() < p_in_bowl:
        i, b = int(rng.choice(items)), int(rng.choice(bowls))
        spec, bowl = task.objects[i], task.objects[b]
        centre = sim.position(task.name_of(b))
        r = max(0.0, bowl.half - spec.footprint - 0.006)
        a, d = rng.uniform(0, 2 * np.pi), r * np.sqrt(rng.random())
        xyz = [centre[0] + d * np.cos(a), centre[1] + d * np.sin(a), BOWL_FLOOR + spec.height / 2 + 0.003]
        orn = c.getQuaternionFromEuler([0, 0, float(rng.uniform(-np.pi, np.pi))])
        body = sim.bodies[task.name_of(i)]
        c.resetBasePositionAndOrientation(body, xyz, orn)
        c.resetBaseVelocity(body, [0, 0, 0], [0, 0, 0])
        c.changeDynamics(body, -1, activationState=c.ACTIVATION_STATE_WAKE_UP)
    for _ in range(48):  # let everything settle (0.2 s)
        c.stepSimulation()


def in_bowl(env) -> dict[int, int]:
    """Object index -> index of the bowl it rests in, from simulator state."""
    task, sim = env.task, env.sim
    out = {}
    for i, s in enumerate(task.objects):
        if s.shape == "bowl":
            continue
        p = sim.position(task.name_of(i))
        for b, bowl in enumerate(task.objects):
            if bowl.shape != "bowl":
                continue
            q = sim.position(task.name_of(b))
            if (np.linalg.norm(p[:2] - q[:2]) < bowl.half and p[2] - s.height / 2 > 0.003
                    and sim.in_contact(task.name_of(i), task.name_of(b))):
                out[i] = b
    return out


def camera_frame(camera, p: np.ndarray) -> tuple[float, float]:
    """(x rightwards in the image, depth along the optical axis) of world point ``p``."""
    view = np.asarray(camera._view, dtype=np.float64).reshape(4, 4).T  # PyBullet's matrices are column-major
    q = view @ np.array([*p, 1.0])
    return float(q[0]), float(-q[2])


def render_scene(env, seed: int, env_id: str, cameras: tuple[str, ...], min_pixels: int,
                 p_in_bowl: float = 0.5) -> list[dict[str, Any]]:
    """Arrange the scene for ``seed`` and return one record per camera image that shows an object:
    ``rgb`` (H, W, 3) uint8, ``mask`` (H, W) int8 and ``meta`` (objects, facts, captions, referring)."""
    arrange_scene(env, seed, p_in_bowl)
    task, sim = env.task, env.sim
    bowl_of = in_bowl(env)
    ids = {sim.bodies[task.name_of(i)]: i for i in range(len(task.objects))}
    rng = np.random.default_rng([seed, 9])
    records = []
    for key in cameras:
        cam = env.all_cameras()[key]
        rgb, seg = sim.render(cam, env.lighting, segmentation=True)
        mask = np.full(seg.shape, -1, dtype=np.int8)
        for body, i in ids.items():
            mask[seg == body] = i
        views = []
        for i, spec in enumerate(task.objects):
            ys, xs = np.nonzero(mask == i)
            x, depth = camera_frame(cam, sim.position(task.name_of(i)))
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
            views.append(ObjectView(i, spec.color, spec.shape, spec.size, x / depth, float(spec.footprint) / depth,
                                    depth, float(spec.footprint),
                                    int(len(xs)), box, bowl_of.get(i), visible=len(xs) >= min_pixels))
        facts = true_facts(views, key, rng)
        if not facts:
            continue
        meta = {
            "seed": seed, "env": env_id, "camera": key, "instruction": task.instruction,
            "objects": [asdict(v) for v in views],
            "facts": [f.to_json() for f in facts],
            "captions": [f.text() for f in facts],
            "referring": {str(v.index): referring_expressions(v, views) for v in views if v.visible},
        }
        records.append({"rgb": rgb, "mask": mask, "meta": meta})
    return records


# --- files ------------------------------------------------------------------------------------------------------
def _write_records(path: Path, records: list[dict[str, Any]], size: int) -> None:
    n = len(records)
    columns = {"images": np.stack([r["rgb"] for r in records]) if n else np.zeros((0, size, size, 3), np.uint8),
               "masks": np.stack([r["mask"] for r in records]) if n else np.zeros((0, size, size), np.int8)}
    write_samples(path, columns, [r["meta"] for r in records], frame_chunks=("images",))


def _read_records(path: Path) -> list[dict[str, Any]]:
    columns, metas = read_samples(path)
    return [{"rgb": i, "mask": m, "meta": d} for i, m, d in zip(columns["images"], columns["masks"], metas)]


def make_vl_data(cfg: VLDataConfig) -> dict[str, Any]:
    """Render (or resume rendering) ``cfg.images`` captioned images into ``cfg.out``; returns the manifest."""
    import vlagym
    from vlagym.core.provenance import provenance

    root = Path(cfg.out)
    staging = Staging(root, "scene", SUFFIX)
    # The image count is not part of the identity: an unfinished run may be resumed with another count
    # (the images are a prefix of the same consecutive seeds either way).
    request = {k: v for k, v in asdict(cfg).items() if k not in ("out", "images")}
    request = json.loads(json.dumps(request))
    request_path = root / "request.json"
    if request_path.exists():
        previous = json.loads(request_path.read_text())
        previous.pop("images", None)
        if previous != request:
            raise ValueError(f"{root} was rendered with different settings {previous}; "
                             f"use another --out or the same options to resume")
        if (root / "manifest.json").exists():
            manifest = json.loads((root / "manifest.json").read_text())
            if manifest["images"] != cfg.images:
                raise ValueError(f"{root} is finished with {manifest['images']} images; use another --out "
                                 f"for {cfg.images}")
            return manifest
    staging.dir.mkdir(parents=True, exist_ok=True)
    if not request_path.exists():
        atomic_write_text(request_path, json.dumps(request, indent=2))

    t0 = time.time()
    counts = {staging.seed_of(p): count_samples(p) for p in staging.paths()}
    seed = cfg.seed_start
    total = 0
    bar = tqdm(total=cfg.images, desc="vl-data", unit="img", dynamic_ncols=True)
    envs: dict[str, Any] = {}
    try:
        while total < cfg.images:
            if seed >= cfg.seed_start + SPLIT_SIZE:
                raise RuntimeError(f"ran out of {cfg.split} seeds before {cfg.images} images")
            if seed not in counts:
                env_id = cfg.env[(seed - cfg.seed_start) % len(cfg.env)]
                if env_id not in envs:
                    envs[env_id] = make_scene_env(env_id, cfg.image_size, cfg.cameras, **cfg.env_kwargs)
                recs = render_scene(envs[env_id], seed, env_id, cfg.cameras, cfg.min_pixels, cfg.p_in_bowl)
                _write_records(staging.path(seed), recs, cfg.image_size)
                counts[seed] = len(recs)
            total += counts[seed]
            bar.update(min(counts[seed], cfg.images - bar.n))
            seed += 1
    finally:
        bar.close()
        for e in envs.values():
            e.close()
    last_seed = seed - 1

    records: list[dict[str, Any]] = []
    for s in range(cfg.seed_start, last_seed + 1):
        records += _read_records(staging.path(s))
    records = records[: cfg.images]
    for k, start in enumerate(range(0, len(records), cfg.shard_size)):
        _write_records(root / shard_name(k, SUFFIX), records[start:start + cfg.shard_size], cfg.image_size)
    n_captions = sum(len(r["meta"]["captions"]) for r in records)
    manifest = {
        **provenance(),
        "vlagym_version": vlagym.__version__,
        "envs": cfg.env,
        "split": cfg.split,
        "seed_range": [cfg.seed_start, last_seed],
        "images": len(records),
        "per_camera": {c: sum(r["meta"]["camera"] == c for r in records) for c in cfg.cameras},
        "captions": n_captions,
        "image_size": cfg.image_size,
        "shards": [p.name for p in sorted(root.glob(SHARD_GLOB))],
        "wall_time_s": round(time.time() - t0, 1),
    }
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2))
    for p in staging.paths():
        p.unlink()
    staging.clear()
    return manifest


# --- reading --------------------------------------------------------------------------------------------------------
@dataclass
class VLData:
    """A vl-data folder in memory: ``images`` (N, H, W, 3) uint8, ``masks`` (N, H, W) int8, ``meta`` rows."""

    images: np.ndarray
    masks: np.ndarray
    meta: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.meta)

    def objects(self, i: int) -> list[ObjectView]:
        return [ObjectView(**o) for o in self.meta[i]["objects"]]

    def facts(self, i: int) -> list[Fact]:
        return [Fact.from_json(f) for f in self.meta[i]["facts"]]


def load_vl_data(root: str | os.PathLike) -> VLData:
    """Read every shard of a vl-data folder; raises ``DatasetError`` naming a corrupt file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no vl-data folder at {root}")
    shards = sorted(root.glob(SHARD_GLOB))
    if not shards:
        hint = " (rendering unfinished: rerun vl-data to resume)" if (root / "staging").exists() else ""
        raise FileNotFoundError(f"{root} holds no {SHARD_GLOB} files; is it a vl-data folder?{hint}")
    records = [r for p in shards for r in _read_records(p)]
    return VLData(np.stack([r["rgb"] for r in records]), np.stack([r["mask"] for r in records]),
                  [r["meta"] for r in records])


__all__ = ["VLData", "VLDataConfig", "arrange_scene", "load_vl_data", "make_vl_data", "render_scene", "split_of"]
