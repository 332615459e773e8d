"""Small file helpers shared by datasets and run folders."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class DatasetError(RuntimeError):
    """A dataset or run-folder file is missing, unreadable or inconsistent."""


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """A JSON file's content, or a ``DatasetError`` naming the file."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e}); restore it or delete it to have it rebuilt") from e
