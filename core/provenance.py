"""Where a result came from: stamped into dataset manifests, run folders and reports."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pybullet

try:
    VERSION = version("vlagym")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0+unknown"


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    return {
        "vlagym_version": VERSION,
        "git_revision": git_revision(),
        "pybullet_api_version": pybullet.getAPIVersion(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "renderer": "TinyRenderer (CPU)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
