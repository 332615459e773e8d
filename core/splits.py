"""The seed splits: every env seed belongs to exactly one of train, val and test.

Demonstrations are collected from train seeds, training validates on val seeds and evaluation reports
test seeds, so no number is ever both learnt from and scored on. This table is the one definition.
"""

from __future__ import annotations

SPLIT_SEED_START = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SPLIT_SIZE = 1_000_000


def split_of(seed: int) -> str:
    for name, start in SPLIT_SEED_START.items():
        if start <= seed < start + SPLIT_SIZE:
            return name
    raise ValueError(f"seed {seed} is outside every split range {SPLIT_SEED_START} (size {SPLIT_SIZE})")


# Names for the table's entries, for defaults and docs; they read the table, they do not restate it.
TRAIN_SEED_START = SPLIT_SEED_START["train"]
VAL_SEED_START = SPLIT_SEED_START["val"]
TEST_SEED_START = SPLIT_SEED_START["test"]
