"""The ``vlagym`` subcommands, one module per group; ``args`` generates flags from the config dataclasses.

A group module lists its commands in ``COMMANDS`` (``args.Command``: name, help, description and the function
that adds the arguments). Adding a command is one ``Command`` in its group; a setting is one documented field
of the command's config dataclass, which becomes a flag, a YAML key and a ``key=value`` override at once.
"""

GROUPS = ("data", "train", "evaluate", "report", "compress", "rl", "vl", "vqa", "language", "eqa", "bench")
"""Modules of ``vlagym.experiments.commands``, in the order ``vlagym --help`` lists their commands."""
