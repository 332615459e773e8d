"""Loading files without unpickling them, and the one switch that allows it (``--trust-pickle``).

A pickle runs code while it loads, so a crafted checkpoint or model zip handed to ``vlagym eval`` could run
anything. vlagym therefore loads:

- its own training state as safetensors + JSON (``policies/train.py``, ``vl/train.py``);
- stable-baselines3 zips with every cloudpickled (``:serialized:``) entry of the zip's ``data`` member
  replaced through SB3's ``custom_objects`` by a value rebuilt here (spaces from the env the model was trained
  on or from the entry's readable fields, schedules as constants, classes from an allow-list), and its
  ``.pth`` members checked to load with ``torch.load(weights_only=True)``.

What cannot be rebuilt is refused with ``PickleRefusedError``, naming the file, the entry and the flag.
``--trust-pickle`` (``allow_pickle()``; the ``VLAGYM_TRUST_PICKLE=1`` environment variable, which evaluation
worker processes inherit) restores the old unpickling loads after a warning.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from vlagym.core.env_args import env_id_of
from vlagym.core.safe_load import (  # noqa: F401  (re-exported: the loaders' one switch)
    PICKLE_WARNING,
    TRUST_PICKLE_ENV,
    PickleRefusedError,
    allow_pickle,
    pickle_trusted,
    refuse,
    torch_load_weights,
    warn_unpickling,
)

logger = logging.getLogger(__name__)

# --- stable-baselines3 zips ----------------------------------------------------------------------------------
# Classes a vlagym (or plain SB3) model's policy_kwargs may name, by the str() SB3 writes beside the pickle.
_ALLOWED_CLASSES = {
    "vlagym.policies.rl.VLAFeaturesExtractor", "vlagym.policies.rl.BCZFeaturesExtractor",
    "vlagym.policies.rl.VLFeaturesExtractor",
    "stable_baselines3.common.torch_layers.FlattenExtractor",
    "stable_baselines3.common.torch_layers.CombinedExtractor", "stable_baselines3.common.torch_layers.NatureCNN",
    "torch.nn.modules.activation.Tanh", "torch.nn.modules.activation.ReLU", "torch.nn.modules.activation.ELU",
    "torch.nn.modules.activation.LeakyReLU", "torch.nn.modules.activation.GELU",
    "torch.nn.modules.activation.SiLU", "torch.optim.adam.Adam", "torch.optim.adamw.AdamW",
    "torch.optim.rmsprop.RMSprop",
}
_CLASS_STR = re.compile(r"^<class '([\w.]+)'>$")
_CONSTANT = re.compile(r"^(?:FloatSchedule\()?ConstantSchedule\(val=([-+0-9.eE]+|inf|nan)\)\)?$")
# Entries SB3 rebuilds itself when they are None (at load or at the next learn()).
_NONE_OK = {"_last_obs", "_last_episode_starts", "_last_original_obs", "rollout_buffer_class",
            "replay_buffer_class"}


def _allowed_class(text: str, path: Path, key: str):
    import importlib

    m = _CLASS_STR.match(text)
    if not m or m.group(1) not in _ALLOWED_CLASSES:
        raise refuse(path, f"the zip's data entry {key!r} names {text!r}, which vlagym does not rebuild without "
                           f"unpickling (allowed: {sorted(_ALLOWED_CLASSES)})")
    module, _, name = m.group(1).rpartition(".")
    return getattr(importlib.import_module(module), name)


def _readable(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith(":")}


def _policy_kwargs(entry: Any, path: Path) -> dict[str, Any]:
    if not (isinstance(entry, dict) and ":serialized:" in entry):
        return dict(entry or {})
    out: dict[str, Any] = {}
    for k, v in _readable(entry).items():
        out[k] = _allowed_class(v, path, f"policy_kwargs.{k}") if isinstance(v, str) and v.startswith("<") else v
    return out


def _parse_array(text: Any, shape: tuple[int, ...], dtype: np.dtype, path: Path, key: str) -> np.ndarray:
    """``str(ndarray)`` back to the array; refused where numpy summarised it (``...``) or it does not round-trip."""
    if isinstance(text, str) and "..." not in text:
        try:
            flat = np.array([float(t) for t in re.sub(r"[\[\]]", " ", text).split()], dtype=np.float64)
            if flat.size == int(np.prod(shape)):
                arr = flat.reshape(shape).astype(dtype)
                if str(arr) == text:
                    return arr
        except ValueError:
            pass
    raise refuse(path, f"cannot rebuild {key} from its stored text {str(text)[:80]!r} and no env_args.json sits "
                       "beside the zip")


def _space_from_json(entry: dict[str, Any], path: Path, key: str):
    from gymnasium import spaces

    kind = entry.get(":type:", "")
    if kind.endswith("spaces.box.Box'>"):
        shape, dtype = tuple(entry["_shape"]), np.dtype(entry["dtype"])
        return spaces.Box(_parse_array(entry["low"], shape, dtype, path, f"{key}.low"),
                          _parse_array(entry["high"], shape, dtype, path, f"{key}.high"), shape, dtype)
    if kind.endswith("spaces.discrete.Discrete'>") and isinstance(entry.get("n"), int):
        start = entry.get("start", 0)
        return spaces.Discrete(entry["n"], start=int(start) if isinstance(start, int) else 0)
    raise refuse(path, f"cannot rebuild {key} ({kind}) without unpickling, and no env_args.json (the env the "
                       "model was trained on, as `vlagym rl` writes it) sits beside the zip")


def _env_args(path: Path) -> dict[str, Any] | None:
    for p in (path.parent / "env_args.json", path.parent.parent / "env_args.json"):
        if p.exists():
            data = json.loads(p.read_text())
            if env_id_of(data):
                return data
    return None


def _env_spaces(env_args: dict[str, Any], policy_kwargs: dict[str, Any]):
    from vlagym.policies.sb3_env import make_sb3_env

    instruction = (policy_kwargs.get("features_extractor_kwargs") or {}).get("instruction")
    env = make_sb3_env(env_id_of(env_args), instruction, **env_args.get("env_kwargs", {}))
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def _same_space(stored: dict[str, Any], space) -> bool:
    """Whether a rebuilt space matches what SB3 wrote readably beside the pickle (str of each field)."""
    fields = _readable(stored)
    for k, v in fields.items():
        have = getattr(space, k, None)
        if k in ("_np_random", "low_repr", "high_repr"):
            continue
        have = list(have) if isinstance(have, tuple) else have
        if isinstance(v, str) and not isinstance(have, str):
            have = str(dict(have)) if k == "spaces" else str(have)
        if have != v:
            return False
    return stored.get(":type:") == str(type(space))


def sb3_custom_objects(path: str | os.PathLike, spaces: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Safe values for every cloudpickled entry of the SB3 zip at ``path`` (SB3's ``custom_objects``).

    ``spaces`` (observation, action), e.g. the vectorised env's when resuming, win; otherwise the spaces come
    from ``env_args.json`` beside the zip (a ``vlagym rl`` run) or, for Box/Discrete spaces, from the entry's
    readable fields. Every rebuilt space must match the readable fields SB3 stored, or the load is refused.
    Raises ``PickleRefusedError`` for anything it cannot rebuild."""
    path = Path(path)
    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read("data"))
    serialized = {k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v}
    out: dict[str, Any] = {}
    policy_kwargs = _policy_kwargs(data.get("policy_kwargs"), path)
    if "policy_kwargs" in serialized:
        out["policy_kwargs"] = policy_kwargs
    if {"observation_space", "action_space"} & serialized:
        if spaces is None and (env_args := _env_args(path)) is not None:
            spaces = _env_spaces(env_args, policy_kwargs)
        for key, space in zip(("observation_space", "action_space"), spaces or (None, None)):
            if key not in serialized:
                continue
            if space is None:
                space = _space_from_json(data[key], path, key)
            elif not _same_space(data[key], space):
                raise ValueError(f"{path}: the stored {key} ({_readable(data[key])}) is not the env's {space}; "
                                 "the model was trained on another env or env kwargs")
            out[key] = space
    for key in sorted(serialized - set(out)):
        entry = data[key]
        if key in _NONE_OK:
            out[key] = None
        elif key in ("ep_info_buffer", "ep_success_buffer"):
            from collections import deque

            out[key] = deque(maxlen=int(data.get("_stats_window_size", 100)))  # training-log windows start empty
        elif key in ("lr_schedule", "clip_range", "clip_range_vf"):
            m = _CONSTANT.match(str(entry.get("value_schedule", "")))
            if m is None:
                raise refuse(path, f"its {key} is not a constant schedule ({_readable(entry)})")
            value = float(m.group(1))
            if key == "lr_schedule":
                from stable_baselines3.common.utils import FloatSchedule

                out[key] = FloatSchedule(value)
            else:
                out[key] = value  # PPO._setup_model wraps a float in FloatSchedule
        elif key == "train_freq":
            from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

            # Not stored readably; every vlagym SAC run uses SB3's default of one step.
            out[key] = TrainFreq(1, TrainFrequencyUnit.STEP)
        elif key == "policy_class":
            out[key] = _policy_class(data, out, path)
        else:
            raise refuse(path, f"the zip's data entry {key!r} ({entry.get(':type:')}) is pickled and vlagym "
                               "cannot rebuild it")
    return out


def _policy_class(data: dict[str, Any], out: dict[str, Any], path: Path):
    from gymnasium import spaces
    from stable_baselines3.common.preprocessing import is_image_space

    algo = sb3_algorithm_name(data, path)
    module = data["policy_class"].get("__module__", "")
    expected = "stable_baselines3.common.policies" if algo == "ppo" else "stable_baselines3.sac.policies"
    if module != expected:
        raise refuse(path, f"its policy_class comes from {module!r}, not SB3's {expected!r}")
    obs = out.get("observation_space")
    name = ("MultiInputPolicy" if isinstance(obs, spaces.Dict) else
            "CnnPolicy" if obs is not None and is_image_space(obs) else "MlpPolicy")
    from stable_baselines3 import PPO, SAC

    return (PPO if algo == "ppo" else SAC).policy_aliases[name]


def sb3_algorithm_name(data: dict[str, Any], path: str | os.PathLike) -> str:
    """``"ppo"`` or ``"sac"``, from the keys of an SB3 zip's ``data`` JSON."""
    if "n_epochs" in data and "clip_range" in data:
        return "ppo"
    if "target_entropy" in data:
        return "sac"
    raise ValueError(f"{path}: an SB3 model, but neither PPO nor SAC (vlagym rl trains those two)")


def check_pth_members(path: str | os.PathLike) -> None:
    """Every ``.pth`` member of the zip loads with ``torch.load(weights_only=True)`` (tensors only), whatever the
    installed SB3 does with them."""
    import pickle

    import torch

    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.endswith(".pth"):
                try:
                    torch.load(io.BytesIO(z.read(name)), map_location="cpu", weights_only=True)
                except pickle.UnpicklingError as e:
                    raise refuse(path, f"its member {name} holds more than tensors ({str(e).splitlines()[0]})") \
                        from None


def load_sb3(path: str | os.PathLike, algo=None, env=None, device: str = "cpu", trust_pickle: bool | None = None,
             **kwargs):
    """``PPO/SAC.load`` without unpickling (``sb3_custom_objects``); with ``trust_pickle`` SB3's own load."""
    from stable_baselines3 import PPO, SAC

    path = Path(path)
    if algo is None:
        with zipfile.ZipFile(path) as z:
            algo = PPO if sb3_algorithm_name(json.loads(z.read("data")), path) == "ppo" else SAC
    if pickle_trusted(trust_pickle):
        warn_unpickling(path, "SB3 model")
        return algo.load(str(path), env=env, device=device, **kwargs)
    check_pth_members(path)
    spaces = (env.observation_space, env.action_space) if env is not None else None
    objects = sb3_custom_objects(path, spaces)
    return algo.load(str(path), env=env, device=device, custom_objects=objects, **kwargs)
