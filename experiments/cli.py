"""The ``vlagym`` command line: one console script, one subcommand per job.

The commands live in ``vlagym.experiments.commands``, one module per group; their flags come from the config
dataclasses (``commands.args``). Only the command being run builds its arguments, so ``vlagym envs`` does not
import torch to generate ``vlagym rl``'s flags.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator

from vlagym.experiments.commands import GROUPS
from vlagym.experiments.commands.args import FORMATTER, Command, resolve


def commands() -> Iterator[Command]:
    """Every subcommand, group by group."""
    for group in GROUPS:
        yield from importlib.import_module(f"vlagym.experiments.commands.{group}").COMMANDS


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand gets its arguments (the others their help line)."""
    p = argparse.ArgumentParser(
        prog="vlagym",
        description="Language-conditioned robot learning in simulation: environments, experts, policies.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in commands():
        s = sub.add_parser(cmd.name, formatter_class=FORMATTER, help=cmd.help, description=cmd.description)
        if only is None or cmd.name == only:
            cmd.build(s)
    _add_debug(p)
    return p


def _add_debug(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """``--debug`` before or after the subcommand (``vlagym --debug eval ...`` or ``vlagym eval ... --debug``)."""
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the traceback of an error instead of one line")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_debug(sub, top=False)


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user's input can cause (a bad flag value, file, dataset or machine), printed as one line."""
    import yaml

    from vlagym.agents.rollout import WorkerCrash
    from vlagym.dataio.dataset import DatasetError

    return (ValueError, KeyError, OSError, DatasetError, FloatingPointError, WorkerCrash, yaml.YAMLError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    named = next((a for a in argv if not a.startswith("-")), "")  # the subcommand, when one is given
    args = build_parser(only=named).parse_args(argv)
    args.argv = argv  # what a command that relaunches itself (train --nproc) passes on
    try:
        if getattr(args, "_config", None) is not None:
            resolve(args)
        return args.func(args)
    except _user_errors() as e:
        if args.debug:
            raise
        text = e.args[0] if isinstance(e, KeyError) and e.args else e
        message = " ".join(str(text).split()) or type(e).__name__
        print(f"vlagym {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
