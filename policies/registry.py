"""Where a policy registers itself: ``@register_policy("rt1")`` on its ``Policy`` class, in its modeling file.

The decorator records the class under its name, which becomes ``Policy.name``, the ``type`` of its config
class and so the ``type`` that config.json files carry and ``load_policy`` dispatches on. Nothing else lists
policies: ``discover_policies`` (run when ``vlagym.policies`` is imported) imports every ``modeling*.py``
of every subpackage of ``vlagym.policies``, and then every module or object of the ``vlagym.policies``
entry-point group, so a new policy is one folder (``policies/<name>/`` with its configuration and
modeling files), in this tree or in another distribution.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import pkgutil
from collections.abc import Callable

from vlagym.policies.base import Policy, PolicyConfig

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "vlagym.policies"
"""Third-party policies: ``[project.entry-points."vlagym.policies"] mine = "my_package.modeling_mine"``."""

_POLICIES: dict[str, type[Policy]] = {}
"""name -> Policy class, in registration order."""
_BROKEN: dict[str, str] = {}
"""entry-point name -> why loading it failed, reported when that name is asked for."""


def register_policy(name: str) -> Callable[[type[Policy]], type[Policy]]:
    """Class decorator: record a ``Policy`` subclass under ``name`` and give its config class that ``type``.

    Refuses a name that is not an identifier (names are folder names and the part before ``-`` in test
    variant names), a name or a config class already held by another policy (``load_policy`` could not
    tell them apart), and a policy whose ``config_class`` is the bare ``PolicyConfig``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a policy name must be a Python identifier (e.g. 'rt1'), got {name!r}")

    def decorate(cls: type[Policy]) -> type[Policy]:
        if not (isinstance(cls, type) and issubclass(cls, Policy)):
            raise TypeError(f"@register_policy({name!r}) decorates a Policy subclass, got {cls!r}")
        config = cls.config_class
        if config is PolicyConfig or not issubclass(config, PolicyConfig):
            raise TypeError(f"{cls.__name__}.config_class must be its own PolicyConfig subclass, got {config!r}")
        held = _POLICIES.get(name)
        if held is not None and held is not cls:
            raise ValueError(f"policy name {name!r} is taken by {held.__module__}.{held.__qualname__}")
        for other, other_cls in _POLICIES.items():
            if other != name and other_cls.config_class is config:
                raise ValueError(f"{cls.__name__}'s config class {config.__name__} is already the {other!r} "
                                 "policy's; give it a subclass of its own")
        cls.name = name
        config.type = name
        _POLICIES[name] = cls
        return cls

    return decorate


def discover_policies() -> None:
    """Import every built-in policy's modeling modules and every ``vlagym.policies`` entry point, so that
    their ``@register_policy`` decorators run. Safe to call again: modules import once."""
    import vlagym.policies as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        sub = importlib.import_module(f"{package.__name__}.{info.name}")
        for mod in sorted(pkgutil.iter_modules(sub.__path__), key=lambda m: m.name):
            if mod.name.startswith("modeling"):
                importlib.import_module(f"{sub.__name__}.{mod.name}")
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _POLICIES or entry.name in _BROKEN:
            continue
        try:
            entry.load()
        except Exception as e:  # a broken plugin must not take the built-in policies down with it
            _BROKEN[entry.name] = f"entry point {entry.value!r} failed to load: {type(e).__name__}: {e}"
            logger.warning("policy %r: %s", entry.name, _BROKEN[entry.name])
            continue
        if entry.name not in _POLICIES:
            _BROKEN[entry.name] = f"entry point {entry.value!r} loaded but registered no policy {entry.name!r}"
            logger.warning("policy %r: %s", entry.name, _BROKEN[entry.name])


def policy_names() -> tuple[str, ...]:
    """Every registered policy's name, built-ins in folder order, then third-party ones."""
    return tuple(_POLICIES)


def policy_class(name: str) -> type[Policy]:
    """The ``Policy`` class registered as ``name``; an unknown name is a ``ValueError`` listing the known."""
    if name in _POLICIES:
        return _POLICIES[name]
    if name in _BROKEN:
        raise ValueError(f"policy {name!r} is not available: {_BROKEN[name]}")
    raise ValueError(f"unknown policy {name!r}; registered: {', '.join(_POLICIES) or 'none'}")


def config_class(name: str) -> type[PolicyConfig]:
    """The config dataclass of the policy registered as ``name``."""
    return policy_class(name).config_class
