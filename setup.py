"""The packages and their data files, found on disk rather than listed in pyproject.toml.

pyproject.toml's ``package-dir`` maps top-level folders (core/, envs/, ...) into ``vlagym``; setuptools'
own ``find`` cannot prefix what it finds with ``vlagym.``, so this walks each mapped folder: every folder
with an ``__init__.py`` is a package, and every other file in a package's folder or in its data folders
(those without ``__init__.py``, such as assets/panda/meshes/ or experiments/configs/) is package data,
whatever its extension. A new subpackage or a new kind of asset ships without an edit here or there;
``tests/test_packaging.py`` builds the wheel and checks both.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

from setuptools import setup

if sys.version_info >= (3, 11):
    import tomllib
else:  # pyproject.toml's build requirements install tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent
CODE_SUFFIXES = (".py", ".pyc", ".pyo")
"""Files that are not data: modules ship as modules, and bytecode is rebuilt by the installer."""


def is_skipped(name: str) -> bool:
    """Caches and hidden files (``__pycache__``, ``.DS_Store``) are never part of the package."""
    return name == "__pycache__" or name.startswith(".")


def package_dirs() -> dict[str, str]:
    """pyproject.toml's ``[tool.setuptools] package-dir``: top-level package -> folder."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def data_files(folder: Path) -> list[Path]:
    """Every non-code file under a data folder, however deep."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(CODE_SUFFIXES)
                  and not any(is_skipped(part) for part in p.relative_to(folder).parts))


def discover(mapped: dict[str, str]) -> tuple[list[str], dict[str, list[str]]]:
    """``(packages, package_data)`` for ``setup()``: every package under each mapped folder (a folder that
    is itself mapped is walked as its own root) and, per package, its data files as escaped globs."""
    packages, package_data = [], {}
    todo = [(name, ROOT / folder) for name, folder in sorted(mapped.items())]
    while todo:
        name, folder = todo.pop()
        if not (folder / "__init__.py").is_file():
            raise FileNotFoundError(f"{folder} is mapped to {name!r} in pyproject.toml but has no __init__.py")
        packages.append(name)
        data: list[Path] = []
        for child in sorted(folder.iterdir()):
            if is_skipped(child.name):
                continue
            if child.is_file():
                if not child.name.endswith(CODE_SUFFIXES):
                    data.append(child)
            elif (child / "__init__.py").is_file():
                if f"{name}.{child.name}" not in mapped:
                    todo.append((f"{name}.{child.name}", child))
            else:
                data += data_files(child)
        if data:
            package_data[name] = [glob.escape(p.relative_to(folder).as_posix()) for p in data]
    return sorted(packages), package_data


if __name__ == "__main__":
    found_packages, found_data = discover(package_dirs())
    setup(packages=found_packages, package_data=found_data)
