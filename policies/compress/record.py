"""What a compressed policy's folder holds beside config.json, and how to read it back.

A compressed policy saves like any other (``config.json`` + ``model.safetensors``) plus:

* ``compression.json``: the provenance — teacher folder, method, settings, what was measured when it was
  made (parameters, sparsity, agreement with the teacher), library versions;
* ``structure.json`` when channels were removed: the new width of every layer that shrank, so the
  architecture is rebuilt from the config and these numbers (no pickled code);
* ``step.onnx`` for the ONNX Runtime backends: the exported per-step network.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

COMPRESSION_NAME = "compression.json"
STRUCTURE_NAME = "structure.json"
ONNX_NAME = "step.onnx"
RECORD_FORMAT = 1

_LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxscript", "torch-pruning")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a compression method may use (None when absent)."""
    out: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def write_record(directory: str | Path, method: str, teacher: str | Path, settings: dict[str, Any],
                 results: dict[str, Any]) -> Path:
    """Write ``compression.json`` into ``directory``."""
    from vlagym.core.io import atomic_write_text
    from vlagym.core.provenance import VERSION

    path = Path(directory) / COMPRESSION_NAME
    data = {
        "format": RECORD_FORMAT,
        "method": method,
        "teacher": str(Path(teacher).resolve()),
        "settings": settings,
        "results": results,
        "versions": {"vlagym": VERSION, **library_versions()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def read_record(directory: str | Path) -> dict[str, Any] | None:
    """The folder's ``compression.json`` as a dict, or None for an uncompressed policy."""
    path = Path(directory) / COMPRESSION_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise ValueError(f"{path}: expected an object with a 'method' string")
    return data
