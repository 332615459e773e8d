"""Learning-rate schedules shared by BC training and VL pre-training."""

from __future__ import annotations

import math


def warmup_cosine(step: int, lr: float, warmup: int, total: int) -> float:
    """Learning rate at ``step``: linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
