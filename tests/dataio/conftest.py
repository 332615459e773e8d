"""Small synthetic episodes for the format tests: every kind of array a collection stores, no simulator."""

from __future__ import annotations

import numpy as np
import pytest

from vlagym.dataio.format import Trajectory


@pytest.fixture
def make_trajectory():
    """``make_trajectory(seed, steps)``: a Trajectory with two cameras, proprio, expert actions and labels,
    its values drawn from ``seed``."""

    def make(seed: int, steps: int = 6) -> Trajectory:
        rng = np.random.default_rng(seed)
        return Trajectory(
            obs={"rgb": rng.integers(0, 256, (steps, 8, 8, 3), dtype=np.uint8),
                 "rgb_wrist": rng.integers(0, 256, (steps, 8, 8, 3), dtype=np.uint8),
                 "proprio": rng.normal(size=(steps, 4)).astype(np.float32)},
            actions=rng.uniform(-1, 1, (steps, 5)).astype(np.float32),
            rewards=rng.normal(size=steps).astype(np.float32),
            dones=np.arange(steps) == steps - 1,
            expert_actions=rng.uniform(-1, 1, (steps, 5)).astype(np.float32),
            labels={"object/pos": rng.normal(size=(steps, 3)).astype(np.float32),
                    "object/rgb/uv": rng.uniform(size=(steps, 2)).astype(np.float32),
                    "object/rgb/visible": rng.random(steps) < 0.5},
        )

    return make
