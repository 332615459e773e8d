"""Shared fixtures: the list of registered ids every env test iterates over, and a tiny dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import vlagym
from vlagym.envs import TABLETOP_IDS

# Keep worker processes and BLAS from oversubscribing this small machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ALL_IDS = list(vlagym.ENV_IDS)


@pytest.fixture(params=TABLETOP_IDS)
def tabletop_id(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def touch_data(tmp_path_factory) -> Path:
    """Three TabletopTouch expert episodes at 32 px in two shards (2 + 1), collected once per run."""
    from vlagym.agents.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("touch_data") / "touch"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=str(out), workers=1,
                          env_kwargs={"image_size": 32}, shard_size=2))
    return out


@pytest.fixture
def touch_copy(touch_data, tmp_path) -> Path:
    """A copy of ``touch_data`` that a test may damage."""
    out = tmp_path / "copy"
    shutil.copytree(touch_data, out)
    return out
