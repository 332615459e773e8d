"""The run-folder resume protocol: a folder records the settings it was started with; a later run into the
same folder resumes only with the same settings (outside the few that set speed, not results), and refuses
otherwise, naming every setting that differs with both values.

Collection (``request.json``), BC training (``config.yaml``), RL (``rl_config.json``), VL pre-training (the
checkpoint's ``settings``) and DAgger (``dagger.json``) all compare through ``settings_differences``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

ABSENT = "<absent>"


def settings_differences(stored: Any, wanted: Any, free: Iterable[str] = (), prefix: str = "") -> list[str]:
    """``key (stored X, requested Y)`` for every (dotted) key whose values differ; nested dicts are compared
    key by key, a key missing on one side reads ``<absent>``. Top-level keys in ``free`` are not compared."""
    free = set(free)
    if isinstance(stored, Mapping) and isinstance(wanted, Mapping):
        return [d for k in sorted(set(stored) | set(wanted), key=str) if not (prefix == "" and k in free)
                for d in settings_differences(stored.get(k, ABSENT), wanted.get(k, ABSENT), (), f"{prefix}{k}.")]
    return [] if stored == wanted else [f"{prefix.rstrip('.')} (stored {stored!r}, requested {wanted!r})"]


def differing_keys(stored: Mapping[str, Any], wanted: Mapping[str, Any], free: Iterable[str] = ()) -> list[str]:
    """The top-level keys (sorted) whose values differ, outside ``free``."""
    free = set(free)
    return sorted({k for k in set(stored) | set(wanted)
                   if k not in free and stored.get(k, ABSENT) != wanted.get(k, ABSENT)}, key=str)


def check_same_settings(where: Any, stored: Any, wanted: Any, hint: str, free: Iterable[str] = ()) -> None:
    """Raise ``ValueError("<where> holds a run with different settings: <differences>; <hint>")`` unless the
    stored and wanted settings agree."""
    diff = settings_differences(stored, wanted, free)
    if diff:
        raise ValueError(f"{where} holds a run with different settings: {'; '.join(diff)}; {hint}")
