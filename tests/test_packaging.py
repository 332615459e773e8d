"""The built wheel holds every package and every data file of the tree, and installs with every policy.

setup.py discovers packages and data instead of listing them; this builds a real wheel (from a copy of the
tree, so the build's own folders stay out of the work tree) and checks it against the folders on disk,
independently of setup.py's walk: every folder with an ``__init__.py`` under pyproject.toml's
``package-dir`` folders is a package, and every other non-Python file under them is in the wheel. The copy
gains a new subpackage and a new kind of asset first, which must ship with no edit anywhere. Then the wheel
is installed into a folder (not editable) and imported from there: its registered policies must be exactly
its policy subpackages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
MAPPED: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md")
CODE_SUFFIXES = (".py", ".pyc", ".pyo")
IGNORED = shutil.ignore_patterns("__pycache__", ".*")


def expected_packages(root: Path) -> set[str]:
    """Every folder with an ``__init__.py`` under the mapped folders, as a dotted package name."""
    found = set()
    for package, folder in MAPPED.items():
        for init in (root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(root / folder)
            if "__pycache__" not in rel.parts:
                found.add(".".join([package, *rel.parts]))
    return found


def expected_data(root: Path) -> set[str]:
    """Every non-Python file under the mapped folders, as its path inside the wheel."""
    found = set()
    for package, folder in MAPPED.items():
        for path in (root / folder).rglob("*"):
            rel = path.relative_to(root / folder)
            if path.is_file() and not path.name.endswith(CODE_SUFFIXES) and not any(
                    p == "__pycache__" or p.startswith(".") for p in rel.parts):
                found.add("/".join([*package.split("."), *rel.parts]))
    return found


def missing_from(names: set[str], root: Path) -> list[str]:
    """What the wheel listing ``names`` lacks of the tree at ``root``: packages, then data files."""
    packages = {n.rpartition("/")[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    return ([f"package {p}" for p in sorted(expected_packages(root) - packages)]
            + [f"data file {d}" for d in sorted(expected_data(root) - names)])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """``(source copy, wheel)``: the tree plus a new subpackage and new asset kinds, built with pip."""
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    src.mkdir()
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, src / name)
    for folder in MAPPED.values():
        shutil.copytree(ROOT / folder, src / folder, ignore=IGNORED)
    # What a newcomer adds: a subpackage, an asset type no pattern names, a config of a new format.
    (src / "core" / "newcomer").mkdir()
    (src / "core" / "newcomer" / "__init__.py").write_text('"""A new subpackage."""\n')
    (src / "assets" / "panda" / "meshes" / "gripper.stl").write_text("solid gripper\nendsolid gripper\n")
    (src / "experiments" / "configs" / "newcomer.toml").write_text("steps = 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(base / "dist"),
         str(src)], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"pip wheel failed (the dev extra installs its build requirements: pip install -e '.[dev]'):\n"
                    f"{result.stdout}\n{result.stderr}")
    (wheel,) = (base / "dist").glob("vlagym-*.whl")
    return src, wheel


def test_wheel_holds_every_package_and_data_file(built):
    src, wheel = built
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not missing_from(names, src), "the wheel lacks:\n" + "\n".join(missing_from(names, src))
    assert "vlagym/core/newcomer/__init__.py" in names and "vlagym/assets/panda/meshes/gripper.stl" in names
    assert "vlagym/experiments/configs/newcomer.toml" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # Never top-level names (docs/ARCHITECTURE.md): everything sits under vlagym/ or its metadata.
    assert {n.split("/")[0] for n in names} == {"vlagym", wheel.name.split("-py")[0] + ".dist-info"}


def test_the_check_fails_on_a_dropped_package_or_file(built):
    src, wheel = built
    names = set(zipfile.ZipFile(wheel).namelist())
    assert missing_from(names - {"vlagym/policies/rt1/__init__.py"}, src) == ["package vlagym.policies.rt1"]
    assert missing_from(names - {"vlagym/assets/panda/panda.urdf"}, src) == ["data file vlagym/assets/panda/panda.urdf"]


def test_installed_wheel_registers_exactly_its_policy_folders(built, tmp_path):
    _, wheel = built
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    # A policy is a subpackage with a modeling file (compress/ is a subpackage of tools, not a policy).
    folders = sorted(p.name for p in (site / "vlagym" / "policies").iterdir()
                     if (p / "__init__.py").is_file() and any(p.glob("modeling*.py")))
    probe = ("import json, sys; sys.path.insert(0, sys.argv[1]); import vlagym.policies as p; "
             "print(json.dumps([p.__file__, list(p.policy_names())]))")
    out = subprocess.run([sys.executable, "-c", probe, str(site)], check=True, capture_output=True, text=True,
                         cwd=tmp_path, timeout=300).stdout
    location, names = json.loads(out.strip().splitlines()[-1])
    assert Path(location).is_relative_to(site), f"imported {location}, not the installed wheel in {site}"
    assert sorted(names) == folders, f"registered {sorted(names)}, but the policy subpackages are {folders}"
