"""One env image per perturbation and strength, tiled into a PNG (the README's perturbation figure).

    python -m vlagym.experiments.perturb_gallery --env vlagym/TabletopPickUp-v0 --seed 2000000 \\
        --strengths 0.5 1 --out docs/perturbations.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vlagym.core.splits import TEST_SEED_START


def gallery(env_id: str, seed: int, strengths: list[float], image_size: int = 96) -> np.ndarray:
    """Rows: strengths; columns: none, then each perturbation. uint8 (H, W, 3)."""
    import gymnasium as gym

    import vlagym  # noqa: F401
    from vlagym.envs.perturb import PERTURBATIONS

    def frame(perturb) -> np.ndarray:
        env = gym.make(env_id, image_size=image_size, perturb=perturb)
        obs, _ = env.reset(seed=seed)
        env.close()
        return obs["rgb"]

    base = frame(None)
    rows = [np.concatenate([base] + [frame({name: s}) for name in PERTURBATIONS], axis=1) for s in strengths]
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="vlagym/TabletopPickUp-v0")
    p.add_argument("--seed", type=int, default=TEST_SEED_START)
    p.add_argument("--strengths", nargs="+", type=float, default=[0.5, 1.0])
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from PIL import Image

    img = gallery(args.env, args.seed, args.strengths, args.image_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(out, optimize=True)
    print(f"{img.shape[1]}x{img.shape[0]} -> {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
