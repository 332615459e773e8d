"""The command line from the config dataclasses: one flag per field, one rule for YAML and ``key=value``.

``add_config(parser, Cls)`` gives every field of ``Cls`` a flag ``--field-name``, typed by its annotation
(``int``, ``float``, ``str``; ``bool`` as ``--x``/``--no-x``; lists and tuples take several values;
dicts take ``KEY=VALUE`` pairs; ``Literal`` gives the choices), with the field's docstring as help and its
default beside it. It adds ``--config FILE.yaml`` and ``key=value`` overrides (positional, or ``--set`` where
a positional would be swallowed by a flag taking several values). The values resolve, later wins::

    field defaults < --config FILE.yaml < flags < key=value

``main`` resolves them (``resolve``) before the command runs: ``args.<field>`` holds each field's value and
``args.config_values`` all of them, ``args.config_explicit`` only those a user gave.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlagym.core.config import apply_overrides, field_default, field_types, parse_value, read_yaml, unwrap_optional

FORMATTER = argparse.ArgumentDefaultsHelpFormatter
UNSET = type("Unset", (), {"__repr__": lambda self: "UNSET"})()
"""``Flag.default`` when the command keeps the field's default."""


# --- shared argument types and helpers ---------------------------------------------------------------------
def at_least(low: int):
    """An argparse type: an int >= ``low`` (``--episodes 0`` once wrote an empty report and exited 0,
    ``--workers 0`` ran anyway)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"  # what argparse calls it in "invalid ... value"
    return parse


COUNT = at_least(1)


def env_ids(values: list[str] | None) -> list[str]:
    """Registered env ids (``None`` or ``["all"]``: every one), each checked."""
    from vlagym.envs import ENV_IDS, check_env_id

    if not values or values == ["all"]:
        return list(ENV_IDS)
    return [check_env_id(v) for v in values]


def field_docs(cls) -> dict[str, str]:
    """A dataclass's field docstrings (the string literal under each field), by field name, through its bases."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def help_text(doc: str) -> str:
    """A field docstring as command-line help: reST literals (````x````) shown plain."""
    return doc.replace("``", "")


@dataclass
class PlotConfig:
    """Settings of a command that overlays several runs on one PNG (``vlagym dagger-plot``, ``vlagym rl-plot``)."""

    runs: list[str]
    """Run folders, one curve each."""
    out: str
    """PNG file."""
    labels: list[str] | None = None
    """Legend names, one per run (default: the folder names)."""
    title: str = ""
    """Plot title."""


def plot_args(func):
    """The arguments of a plot command: ``RUN... --labels ... --title ... --out`` (``PlotConfig``)."""
    def build(s: argparse.ArgumentParser) -> None:
        add_config(s, PlotConfig, flags={"runs": Flag(positional=True)}, overrides=False)
        s.set_defaults(func=func)

    return build


def labelled_runs(runs: list[str], labels: list[str] | None) -> list[tuple[str, str]]:
    """``(label, run)`` pairs; the folder names when no labels are given."""
    labels = labels or [Path(r).name for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"--labels gives {len(labels)} names for {len(runs)} runs")
    return list(zip(labels, runs, strict=True))


# --- one command --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, description and the function that adds its arguments."""

    name: str
    help: str
    description: str
    build: Callable[[argparse.ArgumentParser], None]
    """Adds the arguments to the subcommand's parser and ``set_defaults(func=...)``."""


@dataclass(frozen=True)
class Flag:
    """How one field appears on the command line where the generated flag is not all of it."""

    aliases: tuple[str, ...] = ()
    """Other spellings, e.g. ``--lr`` beside ``--learning-rate`` (the command's earlier flag)."""
    type: Callable[[str], Any] | None = None
    """Parses and checks one value given as text (e.g. ``COUNT``), in flags and ``key=value`` alike."""
    choices: Sequence[Any] | None = None
    metavar: str | None = None
    convert: Callable[[Any], Any] | None = None
    """Turns the flag's parsed value into the field's (``--instruction tokens`` -> ``{"kind": "tokens"}``)."""
    default: Any = UNSET
    """This command's default where it differs from the field's."""
    required: bool = False
    """The field must be given (flag, --config or key=value) although the dataclass has a default."""
    positional: bool = False
    """A positional argument instead of ``--field-name`` (a list field takes any number of values, e.g. the
    run folders of a plot); it may still come from --config or ``--set``."""


def trust_pickle_flag(parser: argparse.ArgumentParser, allows: str) -> None:
    """``--trust-pickle``: ``allows`` says what it lets through; every such flag runs any code a crafted file
    holds, and says so."""
    parser.add_argument("--trust-pickle", action="store_true",
                        help=f"allow {allows} (runs any code a crafted file holds)")


def honour_trust_pickle(args: argparse.Namespace) -> None:
    """Switch pickle loading on (``vlagym.agents.safe_load.allow_pickle``) when ``--trust-pickle`` was given."""
    if getattr(args, "trust_pickle", False):
        from vlagym.agents.safe_load import allow_pickle

        allow_pickle()


def policy_name(text: str) -> str:
    """A ``Flag.type``: a registered policy's name. The registry loads torch, so it is read only when the
    flag is given (``vlagym --help`` stays fast)."""
    from vlagym.policies import policy_names

    if text not in policy_names():
        raise argparse.ArgumentTypeError(f"unknown policy {text!r}; registered: {', '.join(policy_names())}")
    return text


@dataclass
class ConfigSpec:
    """What ``add_config`` generated for one parser, kept for ``resolve``."""

    cls: type
    parser: argparse.ArgumentParser
    flags: dict[str, Flag] = field(default_factory=dict)
    prefixes: dict[str, str] = field(default_factory=dict)
    file_dest: str = "config"
    """Where the parsed namespace holds the settings file's path (``--config``, or ``config_flag``'s)."""
    overrides: bool = True
    """Positional ``key=value`` overrides (in ``args.overrides``; else that name may be a field's)."""

    def fields(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.cls))

    def default(self, f: dataclasses.Field) -> Any:
        flag = self.flags.get(f.name, Flag())
        return flag.default if flag.default is not UNSET else field_default(f)

    def required(self, f: dataclasses.Field) -> bool:
        return self.flags.get(f.name, Flag()).required or self.default(f) is dataclasses.MISSING

    def shown(self, f: dataclasses.Field) -> str:
        """How the usage names the field: ``--field-name``, or ``NAME`` for a positional."""
        return f.name.upper() if self.flags.get(f.name, Flag()).positional else flag_name(f.name)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(map(str, value)) if value else "none"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) if value else "none"
    return str(value)


def add_config(parser: argparse.ArgumentParser, cls, *, flags: dict[str, Flag] | None = None,
               prefixes: dict[str, str] | None = None, overrides: bool = True, config_flag: str = "--config") -> None:
    """One flag per field of dataclass ``cls``, ``--config FILE.yaml`` and ``key=value``
    overrides (positional when ``overrides``; ``--set`` always). ``prefixes``: see
    ``vlagym.core.config.apply_overrides``. ``config_flag`` renames ``--config`` where that name already means
    something else (data-efficiency's and bench train's ``--config`` is the *training* config, a field)."""
    spec = ConfigSpec(cls, parser, dict(flags or {}), dict(prefixes or {}), config_flag.lstrip("-").replace("-", "_"),
                      overrides)
    unknown = set(spec.flags) - {f.name for f in dataclasses.fields(cls)}
    if unknown:  # a typo here would silently drop a flag's alias or check
        raise TypeError(f"Flag given for {sorted(unknown)}, not fields of {cls.__name__}")
    docs, hints = field_docs(cls), field_types(cls)
    group = parser.add_argument_group(f"settings ({cls.__name__}; also in --config YAML or as key=value)")
    for f in spec.fields():
        flag = spec.flags.get(f.name, Flag())
        default = spec.default(f)
        shown = "required" if spec.required(f) else f"default: {_shown(default)}"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              "help": f"{help_text(docs.get(f.name, ''))} ({shown})".replace("%", "%%").strip()}
        base, _ = unwrap_optional(hints[f.name])
        origin, type_args = typing.get_origin(base), typing.get_args(base)
        if flag.convert is not None:  # the flag takes one text value, the convert makes the field's value
            kw["type"] = flag.type or str
        elif base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple) or base in (list, tuple):
            item = type_args[0] if type_args else str
            kw.update(nargs="+", type=flag.type or _scalar_type(item))
        elif origin is dict or base is dict:
            kw.update(nargs="+", metavar="KEY=VALUE", type=_pair)
        elif origin is Literal:
            kw.update(choices=list(type_args), type=type(type_args[0]))
        else:
            kw["type"] = flag.type or _scalar_type(base)
        if flag.choices is not None:
            kw["choices"] = list(flag.choices)
        if flag.metavar is not None:
            kw["metavar"] = flag.metavar
        if flag.positional:  # "*"/"?" and a suppressed default: absent, it may still come from YAML or --set
            if flag.aliases or overrides:  # positional key=value overrides would swallow them (or they those)
                raise TypeError(f"{cls.__name__}.{f.name}: a positional field takes no aliases and needs "
                                "overrides=False (key=value goes to --set)")
            kw["nargs"] = "*" if kw.get("nargs") == "+" else "?"
            kw.setdefault("metavar", kw.pop("dest").upper())
            kw.pop("dest", None)
            group.add_argument(f.name, **kw)
            continue
        group.add_argument(flag_name(f.name), *flag.aliases, **kw)
    parser.add_argument(config_flag, dest=spec.file_dest, default=None, metavar="FILE.yaml",
                        help=f"YAML file of {cls.__name__} settings (flags and key=value win over it)")
    parser.add_argument("--set", dest="set_overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help=f"{cls.__name__} settings as key=value, applied last"
                             + (" (as the positional KEY=VALUE)" if overrides else ""))
    if overrides:
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                            help="settings as key=value (values read by the field's type; YAML for lists and "
                                 "dicts; a.b=v sets an entry of a dict field), applied last")
    parser.set_defaults(_config=spec)


def _scalar_type(kind: Any) -> Callable[[str], Any]:
    return kind if kind in (int, float, str) else parse_value


def _pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, parse_value(value)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Field values from defaults < ``--config`` < flags < ``key=value``, set on ``args``.

    Raises ValueError naming the key for a bad value or an unknown key; a required field left unset ends
    the program as argparse does (exit 2, with the usage).
    """
    spec: ConfigSpec = args._config
    names = [f.name for f in spec.fields()]
    path = getattr(args, spec.file_dest)
    values = read_yaml(path, spec.cls) if path else {}
    for name in names:
        if name in vars(args):
            values[name] = _from_flag(spec, name, getattr(args, name), values)
    items = [*(args.overrides if spec.overrides else []), *args.set_overrides]
    apply_overrides(values, items, spec.cls, spec.prefixes)
    for name, value in list(values.items()):
        values[name] = _check(spec, name, value)
    missing = [f for f in spec.fields() if spec.required(f) and values.get(f.name) is None]
    if missing:
        spec.parser.error("the following arguments are required: " + ", ".join(
            f"{spec.shown(f)} (or {f.name}= as key=value or in {flag_name(spec.file_dest)})" for f in missing))
    args.config_explicit = dict(values)
    args.config_values = {f.name: values[f.name] if f.name in values else spec.default(f) for f in spec.fields()}
    for name, value in args.config_values.items():
        setattr(args, name, value)
    return args


def _from_flag(spec: ConfigSpec, name: str, value: Any, values: dict[str, Any]) -> Any:
    flag = spec.flags.get(name, Flag())
    if flag.convert is not None:
        return flag.convert(value)
    hint, _ = unwrap_optional(field_types(spec.cls)[name])
    if hint is dict or typing.get_origin(hint) is dict:  # pairs merge over the YAML's (or default) mapping
        f = next(f for f in spec.fields() if f.name == name)
        base = values.get(name, spec.default(f))
        return {**(base if isinstance(base, dict) else {}), **dict(value)}
    if typing.get_origin(hint) is tuple or hint is tuple:
        return tuple(value)
    return value


def _check(spec: ConfigSpec, name: str, value: Any) -> Any:
    """Run a field's ``Flag`` checks (choices, type) on a value from YAML or key=value too."""
    flag = spec.flags.get(name, Flag())
    if flag.choices is not None and flag.convert is None and value is not None:
        # A list field (nargs) is checked item by item: --cameras rgb gives ('rgb',).
        bad = [v for v in value if v not in flag.choices] if isinstance(value, list | tuple) else (
            [] if value in flag.choices else [value])
        if bad:
            raise ValueError(f"{name}={bad[0]}: choose one of {', '.join(map(str, flag.choices))}")
    if flag.type is None or value is None or isinstance(value, list | tuple | dict):
        return value
    try:
        return flag.type(str(value))
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise ValueError(f"{name}={value}: {e}") from None
