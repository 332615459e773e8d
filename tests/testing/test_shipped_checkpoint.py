"""The tiny trained checkpoint in assets/ still does its job.

A change to the envs (physics, rendering, seeding), the encoders or the policy code that breaks a
working policy fails here, the way a user's CI would use ``vlagym regress check``. The bar is the
95% Wilson lower bound of its success on fixed test seeds: the checkpoint picked up 6 of these 16
objects when it was committed (lower bound 0.185; see assets/checkpoints/README.md). The bar, 0.1,
needs 4 of 16, which leaves room for a platform's floating-point differences and none for a broken
policy (a policy that ignores its images succeeds on none of them).
"""

from __future__ import annotations

from pathlib import Path

import vlagym.assets
from vlagym.experiments.cli import main

CHECKPOINT = Path(vlagym.assets.__file__).parent / "checkpoints" / "bcz_pickup_tiny"
ENV = "vlagym/TabletopPickUp-v0"


def test_checkpoint_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in CHECKPOINT.iterdir()}
    assert {"model.safetensors", "config.json", "env_args.json"} <= set(files)
    assert sum(files.values()) < 6 * 2**20, files  # a few MB at most


def test_shipped_checkpoint_still_picks_up(capsys):
    code = main(["regress", "check", "--policy", str(CHECKPOINT), "--env", ENV, "--episodes", "16",
                 "--seed-start", "2000000", "--workers", "2", "--min-success", "0.1"])
    out = capsys.readouterr().out
    assert code == 0, out
