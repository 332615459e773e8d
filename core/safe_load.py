"""Trusting pickles, and loading torch checkpoints without unpickling (``weights_only=True``).

The switch (``--trust-pickle``, ``VLAGYM_TRUST_PICKLE=1``) lives here so that training code below the agents
layer can load its checkpoints safely; the stable-baselines3 loaders build on it in ``vlagym.agents.safe_load``.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger(__name__)

TRUST_PICKLE_ENV = "VLAGYM_TRUST_PICKLE"
PICKLE_WARNING = ("unpickling runs whatever code the file holds; use --trust-pickle only for files you made "
                  "yourself or trust")


class PickleRefusedError(ValueError):
    """A file would need unpickling to load, and ``--trust-pickle`` was not given."""


def pickle_trusted(trust: bool | None = None) -> bool:
    """``trust`` when given, else whether ``VLAGYM_TRUST_PICKLE=1`` (set by ``allow_pickle``)."""
    return bool(trust) if trust is not None else os.environ.get(TRUST_PICKLE_ENV) == "1"


def allow_pickle() -> None:
    """What ``--trust-pickle`` does: warn, and let this process and its workers unpickle."""
    print(f"WARNING: --trust-pickle: {PICKLE_WARNING}", file=sys.stderr)
    os.environ[TRUST_PICKLE_ENV] = "1"


def warn_unpickling(path: str | os.PathLike, what: str) -> None:
    msg = f"unpickling {what} {path} (--trust-pickle): {PICKLE_WARNING}"
    logger.warning(msg)
    print(f"WARNING: {msg}", file=sys.stderr)


def refuse(path: str | os.PathLike, why: str) -> PickleRefusedError:
    return PickleRefusedError(f"{path}: {why}. Loading it would unpickle it, which runs any code a crafted file "
                              "holds; refused. Pass --trust-pickle (Python: trust_pickle=True) only if you "
                              "made or trust this file")


# --- torch checkpoints -----------------------------------------------------------------------------------------
def torch_load_weights(path: str | os.PathLike, trust_pickle: bool | None = None, **kwargs):
    """``torch.load(weights_only=True)``; an old checkpoint that needs more is refused unless trusted."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as e:
        if not pickle_trusted(trust_pickle):
            raise refuse(path, f"it holds more than tensors ({str(e).splitlines()[0]}); an old-format "
                               "checkpoint?") from None
    warn_unpickling(path, "checkpoint")
    return torch.load(path, weights_only=False, **kwargs)
