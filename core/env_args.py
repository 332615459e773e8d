"""``env_args.json``: the env a saved policy was trained on, beside its weights (BC runs and RL runs alike).

One key names the env: ``env_name``, robomimic's key, which the dataset's ``data.attrs["env_args"]`` also
uses. ``vlagym rl`` runs written before the two were unified say ``env_id``; ``env_id_of`` reads both.
"""

from __future__ import annotations

from typing import Any

ENV_ARGS_NAME = "env_args.json"
ENV_KEY = "env_name"
OLD_ENV_KEYS = ("env_id",)  # what older RL runs wrote


def env_id_of(env_args: dict[str, Any]) -> str | None:
    """The env id an ``env_args.json`` names, under the current key or an old one; None when it names none."""
    for key in (ENV_KEY, *OLD_ENV_KEYS):
        if env_args.get(key):
            return env_args[key]
    return None


def make_env_args(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    return {ENV_KEY: env_id, "env_kwargs": env_kwargs}
