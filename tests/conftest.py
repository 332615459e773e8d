"""Shared fixtures: the list of registered ids every env test iterates over, a tiny dataset, and the code blocks
of the docs pages that tests follow."""

from __future__ import annotations

import os
import re
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


DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(page: str) -> list[str]:
    """The ```python blocks of ``docs/<page>``, in order."""
    return re.findall(r"^```python\n(.*?)^```$", (DOCS / page).read_text(), flags=re.S | re.M)


@pytest.fixture(scope="session")
def guide_blocks():
    """``guide_blocks(page, marker)``: the python blocks of ``docs/<page>`` whose first line is
    ``# <marker>: <name>``, by name, without that line (the guides' tests run them as written)."""
    def blocks(page: str, marker: str) -> dict[str, str]:
        found = {}
        for body in python_blocks(page):
            first, _, rest = body.partition("\n")
            m = re.fullmatch(rf"# {marker}: (\S+)", first.strip())
            if m:
                found[m.group(1)] = rest
        return found

    return blocks
