"""Modules other installed distributions declare under an entry-point group, imported so they register.

Tasks (``vlagym.tasks``) and dataset formats (``vlagym.dataset_formats``) load this way; the policy registry
reads its group itself, because it also records which names failed (``vlagym.policies.registry``).
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points


def load_plugins(group: str, kind: str) -> None:
    """Import every entry point of ``group``. One that fails to import is reported with a warning naming the
    ``kind`` of plugin, its name and module, and skipped: a broken plugin does not take vlagym down with it."""
    for ep in entry_points(group=group):
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001  (any error in someone else's module)
            warnings.warn(f"vlagym {kind} plugin {ep.name!r} ({ep.value}) failed to import: "
                          f"{type(e).__name__}: {e}", stacklevel=3)
