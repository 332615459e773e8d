"""Shared fixtures: the list of registered ids every env test iterates over."""

from __future__ import annotations

import os

import pytest

import vlagym
from vlagym.envs import TABLETOP_IDS

# Keep worker processes and BLAS from oversubscribing this small machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ALL_IDS = list(vlagym.ENV_IDS)


@pytest.fixture(params=TABLETOP_IDS)
def tabletop_id(request) -> str:
    return request.param
