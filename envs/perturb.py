"""Seeded visual perturbations with a strength knob from 0 (training conditions) to 1.

An env takes ``perturb=`` (a float for every perturbation at that strength, a dict or a
``"name=strength,..."`` string for some of them). At each reset a ``Perturber`` draws the
episode's perturbation from the episode seed (its own generators, one per perturbation, so
the task's draws from ``np_random`` are untouched), changes how the scene *looks* and
post-processes the rendered images. Nothing it adds collides: colours, textures and lights
change appearance only, ghost distractors and occluders are visual-only bodies, camera jitter
moves only the rendering camera. So a perturbed episode has the same task state, rewards and
success as the unperturbed one, step for step; only the images differ. Strength 0 skips
everything, so its images are byte-identical to an env built without ``perturb``.

Each draw is ``u`` (fixed by the seed and the perturbation's name) scaled by the strength, so one
seed at strengths 0.25, 0.5, 1 gives the same change growing in size. Ranges at strength 1:

==============  ======================================================================================
``light``       direction turned by up to 70 deg; colour channels scaled by 0.55..1; intensity
                (ambient and diffuse) x 0.4..1.9
``colors``      table, floor and wall colours blended up to 100% towards random colours
``texture``     a random checker, stripe or noise pattern (two random colours) on table, floor
                and walls, blended over their colour with up to full contrast
``camera``      eye moved up to 8 cm along each of the camera's own axes, look-at point up to 5 cm,
                field of view x 0.8..1.2
``distractors`` up to 4 extra visual-only objects (colour and shape never those of a named object)
``occluder``    a grey visual-only panel 15-40% of the way from the camera to its look-at point,
                off-centre towards a random side, its side up to 0.6 of the image height
``noise``       Gaussian pixel noise, std up to 20 (of 255), drawn afresh every frame
``blur``        Gaussian blur, sigma up to 1.5 pixels (at 128 px; scaled with the image width)
==============  ======================================================================================
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pybullet as pb

from vlagym.envs.sim import Camera, Lighting

if TYPE_CHECKING:
    from vlagym.envs.core import RobotTaskEnv

PERTURBATIONS: dict[str, str] = {
    "light": "light direction, colour and intensity",
    "colors": "table, floor and wall colours",
    "texture": "table, floor and wall textures",
    "camera": "camera pose jitter and field of view",
    "distractors": "extra visual-only distractor objects",
    "occluder": "an occluding panel between the camera and the workspace",
    "noise": "Gaussian image noise",
    "blur": "Gaussian image blur",
}
MAX_LIGHT_TURN = np.radians(70.0)
MAX_EYE_SHIFT = 0.08
MAX_TARGET_SHIFT = 0.05
MAX_FOV_SCALE = 0.2
MAX_GHOSTS = 4
MAX_NOISE_STD = 20.0
MAX_BLUR_SIGMA = 1.5  # pixels at 128 px width
TEXTURE_SIZE = 64  # PyBullet maps about a quarter of it across a box face


def parse_perturb(spec: Any) -> dict[str, float]:
    """Normalise a ``perturb`` argument to ``{name: strength}`` with only non-zero strengths.

    Accepts None, a float (every perturbation), a dict, or a string ``"light=0.5,noise=1"``
    (a bare number string is a float). Raises ``ValueError`` naming the bad name or value.
    """
    if spec is None:
        return {}
    if isinstance(spec, str):
        spec = _parse_string(spec)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        spec = {name: float(spec) for name in PERTURBATIONS}
    if not isinstance(spec, dict):
        raise ValueError(f"perturb must be None, a strength in [0, 1], a dict or 'name=strength,...', got {spec!r}")
    out = {}
    for name, value in spec.items():
        if name not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {name!r}; choose from {', '.join(PERTURBATIONS)}")
        s = float(value)
        if not 0.0 <= s <= 1.0 or not np.isfinite(s):
            raise ValueError(f"perturbation strength for {name!r} must be in [0, 1], got {value!r}")
        if s > 0:
            out[name] = s
    return out


def _parse_string(text: str) -> float | dict[str, float]:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in item:
            raise ValueError(f"perturb string items must be name=strength, got {item!r} in {text!r}")
        name, value = (x.strip() for x in item.split("=", 1))
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"perturb strength for {name!r} must be a number, got {value!r}") from None
    return out


def format_perturb(spec: dict[str, float]) -> str:
    """The canonical string form (sorted), hashable for env kwargs."""
    return ",".join(f"{k}={v:g}" for k, v in sorted(spec.items()))


@dataclass
class Perturber:
    """One episode's perturbation, drawn from the episode seed."""

    strengths: dict[str, float]
    episode_seed: int
    params: dict[str, Any] = field(default_factory=dict)
    lighting: Lighting | None = None

    def rng(self, name: str) -> np.random.Generator:
        # One generator per perturbation: its draw is the same whichever others are on.
        return np.random.default_rng([int(self.episode_seed), list(PERTURBATIONS).index(name), 0x7E57])

    def s(self, name: str) -> float:
        return self.strengths.get(name, 0.0)

    # --- at reset -------------------------------------------------------------------------------------------
    def apply(self, env: RobotTaskEnv) -> None:
        """Change the scene's looks (after the task has built it) and prepare the render hooks."""
        self.lighting = self._light(env.lighting)
        surfaces = env.scenery()
        if self.s("colors") or self.s("texture"):
            self._surfaces(env, surfaces)
        if self.s("camera"):
            rng = self.rng("camera")
            self.params["camera"] = {"eye": rng.uniform(-1, 1, 3), "target": rng.uniform(-1, 1, 3),
                                     "fov": float(rng.uniform(-1, 1))}
        if self.s("distractors"):
            rng = self.rng("distractors")
            n = int(np.ceil(self.s("distractors") * MAX_GHOSTS * rng.uniform(0.25, 1.0)))
            self.params["distractors"] = env.spawn_ghosts(rng, n)
        if self.s("occluder"):
            self._occluder(env)
        self._noise_rng = self.rng("noise")
        if self.s("blur"):
            self.params["blur_sigma"] = self.s("blur") * MAX_BLUR_SIGMA * float(self.rng("blur").uniform(0.5, 1.0))

    def _light(self, base: Lighting) -> Lighting:
        s = self.s("light")
        if not s:
            return base
        rng = self.rng("light")
        d = np.asarray(base.direction, float)
        d = d / np.linalg.norm(d)
        axis = np.cross(d, rng.normal(size=3))
        axis /= np.linalg.norm(axis)
        a = s * MAX_LIGHT_TURN * rng.uniform(0.3, 1.0)
        # Rodrigues' rotation of the light direction about a random axis perpendicular to it.
        d = d * np.cos(a) + np.cross(axis, d) * np.sin(a)
        if d[2] < 0.05:  # keep the light above the horizon
            d[2] = 0.05
        color = np.asarray(base.color) * (1.0 - s * 0.45 * rng.uniform(0, 1, 3))
        gain = float(np.exp(s * rng.uniform(np.log(0.4), np.log(1.9))))
        light = Lighting(direction=tuple(float(x) for x in d), color=tuple(float(c) for c in color),
                         ambient=base.ambient * gain, diffuse=base.diffuse * gain, specular=base.specular,
                         shadows=base.shadows)
        self.params["light"] = {"direction": light.direction, "color": light.color, "gain": gain}
        return light

    def _surfaces(self, env: RobotTaskEnv, surfaces: dict[str, list[str]]) -> None:
        c = env.sim.client
        crng, trng = self.rng("colors"), self.rng("texture")
        for role in sorted(surfaces):
            names = [n for n in surfaces[role] if n in env.sim.bodies]
            if not names:
                continue
            base = np.asarray(c.getVisualShapeData(env.sim.bodies[names[0]])[0][7][:3], float)
            rgb = base
            target = crng.uniform(0.05, 0.95, 3)
            if self.s("colors"):
                rgb = (1 - self.s("colors")) * base + self.s("colors") * target
            tex = None
            pattern = int(trng.integers(3))
            colours = trng.uniform(0.0, 1.0, (2, 3))
            freq = int(trng.integers(8, 25))
            if self.s("texture"):
                tex = _texture(c, pattern, colours, freq, self.s("texture"), rgb)
                self.params.setdefault("texture", {})[role] = ("checker", "stripes", "noise")[pattern]
            if self.s("colors"):
                self.params.setdefault("colors", {})[role] = [float(x) for x in rgb]
            for name in names:
                body = env.sim.bodies[name]
                if tex is not None:
                    c.changeVisualShape(body, -1, textureUniqueId=tex, rgbaColor=[1, 1, 1, 1])
                else:
                    c.changeVisualShape(body, -1, rgbaColor=[*rgb, 1.0])

    def _occluder(self, env: RobotTaskEnv) -> None:
        rng = self.rng("occluder")
        side = rng.uniform(-1, 1, 2)
        side /= max(1e-6, np.abs(side).max())
        occ = {"along": float(rng.uniform(0.15, 0.4)), "side": side.tolist(),
               "size": float(self.s("occluder") * rng.uniform(0.6, 1.0))}
        self.params["occluder"] = occ
        # Sized for the main camera: the panel's half side is ``size`` x 0.6 of the half view at its depth.
        cam = env.all_cameras()["rgb"]
        depth = occ["along"] * float(np.linalg.norm(np.subtract(cam.target, cam.eye)))
        occ["half"] = 0.6 * occ["size"] * depth * np.tan(np.radians(cam.fov) / 2)
        shade = float(rng.uniform(0.25, 0.6))
        c = env.sim.client
        vis = c.createVisualShape(pb.GEOM_BOX, halfExtents=[occ["half"], occ["half"], 0.001],
                                  rgbaColor=[shade, shade, shade * 0.95, 1.0])
        env.sim.add("perturb_occluder", c.createMultiBody(0, -1, vis, basePosition=[0, 0, -10]))

    # --- every frame ----------------------------------------------------------------------------------------
    def camera(self, cam: Camera) -> Camera:
        """The camera to render with: jittered around ``cam`` (left as it is) in its own frame."""
        jit = self.params.get("camera")
        if jit is None:
            return cam
        s = self.s("camera")
        right, up, fwd = _frame(cam)
        basis = np.stack([right, up, fwd], axis=1)
        return Camera(eye=tuple(np.asarray(cam.eye) + s * MAX_EYE_SHIFT * basis @ jit["eye"]),
                      target=tuple(np.asarray(cam.target) + s * MAX_TARGET_SHIFT * basis @ jit["target"]),
                      up=cam.up, fov=cam.fov * (1 + s * MAX_FOV_SCALE * jit["fov"]), width=cam.width,
                      height=cam.height, near=cam.near, far=cam.far)

    def place_occluder(self, env: RobotTaskEnv, cam: Camera) -> None:
        """Pose the occluding panel between ``cam`` and what it looks at, facing the camera."""
        occ = self.params.get("occluder")
        if occ is None:
            return
        right, up, fwd = _frame(cam)
        depth = occ["along"] * float(np.linalg.norm(np.subtract(cam.target, cam.eye)))
        half_view = depth * np.tan(np.radians(cam.fov) / 2)
        # Off the image centre towards ``side``, so a small panel sits near an edge, a large one
        # reaches the middle.
        offset = max(0.0, half_view - 0.5 * occ["half"])
        centre = np.asarray(cam.eye) + fwd * depth + offset * (occ["side"][0] * right + occ["side"][1] * up)
        quat = _quat_from_matrix(np.stack([right, up, -fwd], axis=1))
        env.sim.client.resetBasePositionAndOrientation(env.sim.bodies["perturb_occluder"], centre.tolist(), quat)

    def postprocess(self, rgb: np.ndarray) -> np.ndarray:
        """Blur, then noise (a camera blurs before its sensor adds noise)."""
        sigma = self.params.get("blur_sigma")
        if sigma:
            from scipy.ndimage import gaussian_filter

            sigma = sigma * rgb.shape[1] / 128
            rgb = np.clip(gaussian_filter(rgb.astype(np.float32), sigma=(sigma, sigma, 0)) + 0.5, 0, 255
                          ).astype(np.uint8)
        s = self.s("noise")
        if s:
            noise = self._noise_rng.normal(0.0, s * MAX_NOISE_STD, rgb.shape)
            rgb = np.clip(rgb.astype(np.float32) + noise + 0.5, 0, 255).astype(np.uint8)
        return rgb


def _frame(cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right, up and forward unit vectors of a camera."""
    fwd = np.subtract(cam.target, cam.eye).astype(float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(cam.up, float))
    right /= np.linalg.norm(right)
    return right, np.cross(right, fwd), fwd


def _quat_from_matrix(m: np.ndarray) -> list[float]:
    """(x, y, z, w) quaternion of a rotation matrix."""
    from scipy.spatial.transform import Rotation

    return [float(x) for x in Rotation.from_matrix(m).as_quat()]


_TEXTURE_DIR: str | None = None


def _texture(client, pattern: int, colours: np.ndarray, freq: int, strength: float, base: np.ndarray) -> int:
    """Load a small procedural texture (checker, stripes or value noise) blended over ``base``."""
    global _TEXTURE_DIR
    from PIL import Image

    n = TEXTURE_SIZE
    yy, xx = np.mgrid[0:n, 0:n] * freq // n
    if pattern == 0:
        mask = ((xx + yy) % 2).astype(np.float32)
    elif pattern == 1:
        mask = (xx % 2).astype(np.float32)
    else:  # blocky value noise from a generator seeded by the colours (so: by the episode)
        seed = int(hashlib.sha256(colours.tobytes()).hexdigest()[:8], 16)
        cells = np.random.default_rng(seed).uniform(0, 1, (freq + 1, freq + 1))
        mask = cells[yy, xx]
    pat = colours[0] * (1 - mask[..., None]) + colours[1] * mask[..., None]
    img = (1 - strength) * np.asarray(base)[None, None] + strength * pat
    pixels = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if _TEXTURE_DIR is None:
        _TEXTURE_DIR = tempfile.mkdtemp(prefix="vlagym_tex_")
    path = os.path.join(_TEXTURE_DIR, hashlib.sha256(pixels.tobytes()).hexdigest()[:16] + ".png")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp.png"
        Image.fromarray(pixels).save(tmp)
        os.replace(tmp, path)
    return client.loadTexture(path)
