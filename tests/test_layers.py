"""The import graph follows the layers of docs/ARCHITECTURE.md: each subpackage of ``vlagym`` imports only
from the layers below it (or its own), and no two subpackages import each other.

Every module is parsed with ``ast``, so imports inside functions (lazy imports) and under ``TYPE_CHECKING``
count as much as those at the top: a lazy upward import is still an upward dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top; a subpackage may import its own layer's modules and any layer below.
LAYERS: dict[str, int] = {
    "core": 0,  # seed splits, atomic writes, resume protocol, provenance, stats: imports no vlagym
    "assets": 0,  # data files (and a mesh-making script)
    "vlagym": 1,  # the root package: registers the envs on import
    "envs": 1,
    "dataio": 2,
    "vl": 3,  # the vision-language encoder (and its pre-training) that policies build on
    "policies": 4,
    "agents": 5,
    "testing": 5,  # the env contract kit (pytest plugin)
    "experiments": 6,
}


def subpackage(module: str) -> str:
    """``vlagym.policies.rt1.modeling_rt1`` -> ``policies``; ``vlagym`` -> ``vlagym``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imported_modules(module: str, source: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` for every ``vlagym`` module that ``source`` (the text of ``module``) imports,
    anywhere in the file; relative imports are resolved, ``from vlagym import x`` names ``vlagym.x``."""
    out = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "vlagym":
                out += [(node.lineno, f"vlagym.{a.name}" if a.name in LAYERS else "vlagym") for a in node.names]
            else:
                out.append((node.lineno, base))
    return [(line, m) for line, m in out if m == "vlagym" or m.startswith("vlagym.")]


def check_source(module: str, source: str, is_package: bool = False) -> list[str]:
    """One message per import in ``source`` that goes up the layers (or to a subpackage no layer names)."""
    own = subpackage(module)
    if own not in LAYERS:
        return [f"{module}: subpackage {own!r} has no layer in LAYERS (add it, and to docs/ARCHITECTURE.md)"]
    problems = []
    for line, target in imported_modules(module, source, is_package):
        other = subpackage(target)
        if other not in LAYERS:
            problems.append(f"{module}:{line} imports {target}, whose subpackage {other!r} has no layer")
        elif LAYERS[other] > LAYERS[own]:
            problems.append(f"{module}:{line} imports {target}: {own} (layer {LAYERS[own]}) may not import "
                            f"{other} (layer {LAYERS[other]}), which is above it")
    return problems


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle (as a path that returns to its start) in a graph of subpackages, self-loops ignored."""
    cycles, seen = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == node:
                continue
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    cycles.append(cycle)
            else:
                visit(nxt, [*path, nxt])

    for start in sorted(edges):
        visit(start, [start])
    return cycles


def package_modules() -> Iterable[tuple[str, Path]]:
    """``(module name, file)`` for every module of the installed layout (pyproject's ``package-dir``)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs = config["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(dirs.items()):
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            # A folder that is itself mapped (vlagym.envs inside vlagym/ would be) is walked on its own.
            name = ".".join([package, *parts])
            if package == "vlagym" and parts and f"vlagym.{parts[0]}" in dirs:
                continue
            yield name, path


def test_layers_cover_every_subpackage() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapped = {subpackage(p) for p in config["tool"]["setuptools"]["package-dir"]}
    assert mapped <= set(LAYERS), f"subpackages without a layer: {sorted(mapped - set(LAYERS))}"


def test_no_upward_imports() -> None:
    problems = []
    for module, path in package_modules():
        problems += check_source(module, path.read_text(), is_package=path.name == "__init__.py")
    assert not problems, "imports that go up the layers:\n" + "\n".join(problems)


def test_no_cycles_between_subpackages() -> None:
    edges: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for module, path in package_modules():
        own = subpackage(module)
        for line, target in imported_modules(module, path.read_text(), path.name == "__init__.py"):
            other = subpackage(target)
            edges.setdefault(own, set()).add(other)
            where.setdefault((own, other), f"{module}:{line} imports {target}")
    cycles = find_cycles(edges)
    shown = ["  " + " -> ".join(c) + ": " + "; ".join(where[a, b] for a, b in zip(c, c[1:])) for c in cycles]
    assert not cycles, "import cycles between subpackages:\n" + "\n".join(shown)


def test_core_imports_nothing_of_vlagym() -> None:
    found = [f"{m}:{line} imports {t}" for m, path in package_modules() if subpackage(m) == "core"
             for line, t in imported_modules(m, path.read_text(), path.name == "__init__.py")
             if subpackage(t) != "core"]
    assert not found, found


def test_checker_catches_violations() -> None:
    # The checker must really fail: a lazy upward import, a relative one, and a `from vlagym import` one.
    lazy = "import numpy\n\ndef f():\n    from vlagym.agents.rollout import run_episode\n    return run_episode\n"
    problems = check_source("vlagym.envs.foo", lazy)
    assert len(problems) == 1 and "vlagym.envs.foo:4 imports vlagym.agents.rollout" in problems[0]
    assert check_source("vlagym.policies.bar", "from ..experiments import cli\n")  # resolves to vlagym.experiments
    assert check_source("vlagym.core.baz", "from vlagym import __version__\n")  # the root registers envs
    assert check_source("vlagym.dataio.x", "from vlagym import testing\n")
    assert check_source("vlagym.newpkg.x", "")  # a subpackage the layers do not name
    # Downward and sideways-within-a-subpackage imports pass.
    assert not check_source("vlagym.agents.x", "from vlagym.policies import load_policy\nfrom . import rollout\n")
    assert not check_source("vlagym.envs.x", "import gymnasium\nfrom vlagym.core.splits import split_of\n")
    # Two subpackages of one layer that import each other form a cycle.
    assert find_cycles({"agents": {"testing", "core"}, "testing": {"agents"}, "core": set()}) == [
        ["agents", "testing", "agents"]]
    assert not find_cycles({"agents": {"policies", "agents"}, "policies": {"core"}})
