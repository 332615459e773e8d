"""Training windows over demonstration datasets, with on-the-fly image augmentation.

A sample at step ``t`` of a demo holds the ``history`` observations ending at ``t`` and the
``horizon`` actions starting at ``t`` (RT-1: history 6, horizon 1; BC-Z: history 1, horizon 10).
Windows that cross an episode edge are padded by repeating the edge entry, and masks say
which entries are real.

Windows read through the dataset format interface (``dataio.format``), so every registered format trains
the same way. Loading refuses garbage before training sees it (``DatasetError`` naming file, demo, key, row):
labels and proprio must be finite, labels must lie in the env's action space (built from each
shard's ``env_args``) widened by ``ACTION_MARGIN`` of its range per side, and a ``stats.json``
must agree with the statistics of the data it describes (see ``check_stats``).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlagym.core.io import DatasetError
from vlagym.dataio.dataset import DemoRef, index_demos
from vlagym.dataio.format import DatasetReader, reader_of

ACTION_KEYS = ("actions", "expert_actions")
# Executed actions are clipped to the space by the expert, so stored ones lie inside it; 10% of the
# range per side (tabletop: [-1.2, 1.2]) tolerates other recorders' rounding or a slight overshoot
# and still refuses a unit mistake (degrees, millimetres) or garbage such as 1e30.
ACTION_MARGIN = 0.1
# stats.json may differ from the data's own statistics by this much (float32 round trips, summation order).
STATS_RTOL, STATS_ATOL = 1e-3, 1e-5


class DemoWindows(Dataset):
    """``torch.utils.data.Dataset`` of windows over one or many datasets of any registered format.

    Args:
        paths: dataset folders (or single shard files, where the format allows).
        history: observations per sample, ending at the current step.
        horizon: actions per sample, starting at the current step.
        image_keys: image observations to load (``"rgb"``, ``"rgb_wrist"``).
        augment: random shift and colour jitter (training only; off for evaluation).
        shift: maximum random shift in pixels.
        jitter: brightness/contrast/saturation jitter strength in [0, 1).
        max_demos: use only the first ``max_demos`` demos (for data-efficiency studies).
        action_key: the labels: ``"actions"`` (what was executed, noise included) or
            ``"expert_actions"`` (the scripted expert's noiseless plan at the same states, DART's
            labels; datasets collected since it was recorded).
        preload: decode every frame into memory at construction (uint8, ``decoded_bytes`` of them), so
            no sample pays for decompression: the loader's cores compute instead of inflating gzip chunks.
        label_keys: privileged labels to load (``vlagym.envs.labels``: ``object/rgb/uv``,
            ``object/rgb/visible``, ``object/pos``, ...), each at the current step. A pixel position
            ``<role>/<camera>/uv`` moves with its camera's random shift.

    Each item is a dict:
        ``<image_key>``: uint8 (history, 3, H, W); ``obs_mask``: bool (history,);
        ``proprio``: float32 (history, P); ``actions``: float32 (horizon, A), or (horizon,) for a
        ``Discrete`` env's actions, stored one number per step;
        ``action_mask``: bool (horizon,); ``instruction``: str; ``index``: (demo, t);
        ``labels/<key>`` for each of ``label_keys``: its value at step t (float32, or bool for visibility).
    """

    def __init__(
        self,
        paths: list[str | os.PathLike] | str | os.PathLike,
        history: int = 1,
        horizon: int = 1,
        image_keys: tuple[str, ...] = ("rgb",),
        augment: bool = False,
        shift: int = 4,
        jitter: float = 0.1,
        max_demos: int | None = None,
        action_key: str = "actions",
        label_keys: tuple[str, ...] = (),
        preload: bool = False,
    ) -> None:
        if action_key not in ACTION_KEYS:
            raise ValueError(f"action_key must be one of {ACTION_KEYS}, got {action_key!r}")
        if history < 1 or horizon < 1:
            raise ValueError(f"history and horizon must be >= 1, got history={history}, horizon={horizon}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        self.demos: list[DemoRef] = index_demos(self.paths)
        self.max_demos = max_demos
        if max_demos is not None:
            self.demos = self.demos[:max_demos]
        if not self.demos:
            raise ValueError(f"no demos in {self.paths}")
        self.history, self.horizon = history, horizon
        self.action_key = action_key
        self.image_keys = tuple(image_keys)
        self.label_keys = tuple(label_keys)
        self.augment, self.shift, self.jitter = augment, shift, jitter
        self._index = [(d, t) for d, ref in enumerate(self.demos) for t in range(ref.length)]
        self._readers = list({id(r): r for r in map(reader_of, self.demos)}.values())
        for reader in self._readers:  # random access: one handle per file per process
            reader.keep_open = True
        self._check_keys()
        self._data_stats = self._scan()
        self._preloaded: list[dict[str, np.ndarray]] | None = self._preload() if preload else None
        for reader in self._readers:  # no handle opened here may cross into a forked DataLoader worker
            reader.close()

    def decoded_bytes(self, image_keys: tuple[str, ...] | None = None) -> int:
        """Memory the decoded frames of ``image_keys`` (default: this dataset's) take: what ``preload`` holds."""
        ref = self.demos[0]
        keys = self.image_keys if image_keys is None else image_keys
        per_frame = sum(int(np.prod(reader_of(ref).read(ref, f"obs/{k}", slice(0, 1)).shape[1:])) for k in keys)
        return per_frame * sum(r.length for r in self.demos)

    def _keys(self) -> list[str]:
        """The flat keys an item reads."""
        return [*(f"obs/{k}" for k in (*self.image_keys, "proprio")), self.action_key,
                *(f"labels/{k}" for k in self.label_keys)]

    def _preload(self) -> list[dict[str, np.ndarray]]:
        """Every demo's frames, proprio, labels and label keys as numpy arrays, by flat key."""
        from tqdm import tqdm

        return [reader_of(ref).read_keys(ref, self._keys())
                for ref in tqdm(self.demos, desc="decode frames into memory", unit="demo", dynamic_ncols=True,
                                leave=False)]

    def _check_keys(self) -> None:
        ref = self.demos[0]
        obs = [k.split("/", 1)[1] for k in reader_of(ref).keys(ref) if k.startswith("obs/")]
        missing = [k for k in (*self.image_keys, "proprio") if k not in obs]
        if missing:
            raise KeyError(f"{ref.path}: observations lack {missing}; have {sorted(obs)}")
        if self.action_key != "actions":
            lacking = [r for r in self.demos if self.action_key not in reader_of(r).keys(r)]
            if lacking:
                raise KeyError(f"{lacking[0].path} [{lacking[0].key}] has no {self.action_key!r} (collected before "
                               f"the expert's noiseless actions were stored); recollect it or train on 'actions'")
        for r in self.demos if self.label_keys else ():
            have = [k.split("/", 1)[1] for k in reader_of(r).keys(r) if k.startswith("labels/")]
            missing = [k for k in self.label_keys if k not in have]
            if missing:
                raise KeyError(
                    f"{r.path} [{r.key}] has no privileged label labels/{missing[0]} (collected before "
                    f"labels were recorded, or a task without that role: it has {sorted(have)}); recollect it, "
                    f"or train without grounding heads (policy.heatmap_weight, position_weight and yaw_weight 0)")

    def _scan(self) -> dict[str, dict[str, list[float]]]:
        """Read every demo's labels and proprio once: refuse non-finite values and labels outside the
        action space (plus ``ACTION_MARGIN``); return their per-dimension statistics."""
        arrays: dict[str, list[np.ndarray]] = {self.action_key: [], "proprio": []}
        for ref in self.demos:
            reader = reader_of(ref)
            bounds = _action_bounds(json.dumps(reader.env_args(ref), sort_keys=True))
            for key in arrays:
                x = reader.read(ref, key if key in ACTION_KEYS else f"obs/{key}")
                _check_values(x, f"{ref.path} [{ref.key}] {key}", bounds if key in ACTION_KEYS else None)
                arrays[key].append(x)
        out = {}
        for key, xs in arrays.items():
            x = np.concatenate(xs).astype(np.float64)
            out[key] = {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "min": x.min(0).tolist(),
                        "max": x.max(0).tolist(), "count": int(len(x))}
        return out

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """``key`` is an index, or ``(index, augmentation_seed)`` for reproducible augmentation."""
        i, aug_seed = key if isinstance(key, tuple) else (key, None)
        d, t = self._index[i]
        return self._item(d, t, self.demos[d], aug_seed)

    def _rows(self, d: int, ref: DemoRef, reader: DatasetReader, key: str, start: int, stop: int) -> np.ndarray:
        if self._preloaded is not None:
            return self._preloaded[d][key][start:stop]
        return reader.read(ref, key, slice(start, stop))

    def _item(self, d: int, t: int, ref: DemoRef, aug_seed: int | None) -> dict[str, Any]:
        reader = reader_of(ref)
        n = ref.length
        lo = max(0, t - self.history + 1)
        obs_idx = np.arange(t - self.history + 1, t + 1)
        obs_mask = obs_idx >= 0
        take_obs = np.clip(obs_idx, 0, None) - lo  # pad by repeating the first frame
        act_idx = np.arange(t, t + self.horizon)
        action_mask = act_idx < n
        if ref.source == "dagger":
            # The expert labelled each state the policy reached; the labels after t are its plans at
            # states the policy chose, not a continuation of its own plan from t: only step t is a target.
            action_mask[1:] = False
        hi = min(n, t + self.horizon)
        take_act = np.clip(act_idx, None, n - 1) - t  # pad by repeating the last action
        item: dict[str, Any] = {
            "obs_mask": torch.from_numpy(obs_mask),
            "action_mask": torch.from_numpy(action_mask),
            "proprio": torch.from_numpy(self._rows(d, ref, reader, "obs/proprio", lo, t + 1)[take_obs]
                                        .astype(np.float32)),
            "actions": torch.from_numpy(self._rows(d, ref, reader, self.action_key, t, hi)[take_act]
                                        .astype(np.float32)),
            "instruction": ref.instruction,
            "index": torch.tensor([d, t]),
        }
        gen = np.random.default_rng(aug_seed) if self.augment else None
        offsets = {}
        for key in self.image_keys:
            frames = self._rows(d, ref, reader, f"obs/{key}", lo, t + 1)[take_obs]  # (history, H, W, 3) uint8
            images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
            if gen is not None:
                images, offsets[key] = augment_images(images, gen, self.shift, self.jitter, return_shift=True)
            item[key] = images
        for name in self.label_keys:
            value = np.asarray(self._rows(d, ref, reader, f"labels/{name}", t, t + 1)[0])
            *_, cam, field = name.split("/")
            if field == "uv" and cam in offsets:  # the label moves with the image
                (ox, oy), (h, w) = offsets[cam], item[cam].shape[-2:]
                value = value + np.array([ox / w, oy / h], dtype=np.float32)
            item[f"labels/{name}"] = torch.from_numpy(np.asarray(value, dtype=bool if field == "visible" else
                                                                 np.float32))
        return item

    def action_stats(self) -> dict[str, list[float]]:
        """Per-dimension mean, std, min, max of the labels (stats.json when it covers these demos)."""
        return self._stats(self.action_key)

    def proprio_stats(self) -> dict[str, list[float]]:
        return self._stats("proprio")

    def _stats(self, key: str) -> dict[str, list[float]]:
        if self.max_demos is None and len(self.paths) == 1:
            reader = reader_of(self.demos[0])
            stats = reader.stats()
            if isinstance(stats, dict) and key in stats:
                check_stats(stats[key], self._data_stats[key], f"{reader.path / 'stats.json'} [{key}]")
                return stats[key]
        return self._data_stats[key]


def check_stats(stats: Any, data: dict[str, list[float]], where: str) -> None:
    """Refuse statistics that are malformed, non-finite or not those of the data they describe.

    The rule for degenerate ones: a std of 0 is accepted only where the data is constant (min ==
    max, e.g. a gripper that never opens), and the normaliser floors it to ``MIN_STD`` (targets are
    then exactly 0). Any std, mean, min or max that differs from the data's own (a hand-edited or
    stale stats.json) is refused, std 0 on a dimension that moves included: dividing by it would
    blow the targets up.
    """
    if not isinstance(stats, dict):
        raise DatasetError(f"{where}: expected an object with mean, std, min, max; got {type(stats).__name__}")
    dim = np.size(data["mean"])
    for field_ in ("mean", "std", "min", "max"):
        values = stats.get(field_)
        try:
            got = np.atleast_1d(np.asarray(values, dtype=np.float64))
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: {field_!r} must be {dim} numbers, got {values!r}") from None
        if got.shape != (dim,):
            raise DatasetError(f"{where}: {field_!r} must be {dim} numbers, got {values!r}")
        bad = np.flatnonzero(~np.isfinite(got))
        if bad.size:
            raise DatasetError(f"{where}: {field_}[{bad[0]}] = {got[bad[0]]} is not finite")
        want = np.atleast_1d(np.asarray(data[field_]))
        off = np.flatnonzero(~np.isclose(got, want, rtol=STATS_RTOL, atol=STATS_ATOL))
        if off.size:
            i = off[0]
            hint = " (std 0 on a dimension that varies)" if field_ == "std" and got[i] == 0 else ""
            raise DatasetError(f"{where}: {field_}[{i}] = {got[i]:.6g} but the data gives {want[i]:.6g}{hint}; "
                               f"the file is stale or edited: delete it to use the data's statistics")


def _check_values(x: np.ndarray, where: str, bounds: tuple[np.ndarray, np.ndarray] | None) -> None:
    """``x`` (T, D): finite, and within ``bounds`` widened by ``ACTION_MARGIN`` of the range."""
    if not np.issubdtype(x.dtype, np.number):
        return
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        raise DatasetError(f"{where}: row {bad[0][0]} holds {x[tuple(bad[0])]} (not finite)")
    if bounds is None:
        return
    low, high = bounds
    margin = ACTION_MARGIN * (high - low)
    outside = np.argwhere((x < low - margin) | (x > high + margin))
    if outside.size:
        idx = tuple(outside[0])
        dim = idx[-1] if x.ndim > 1 else 0
        raise DatasetError(f"{where}: row {idx[0]} dimension {dim} = {x[idx]:.6g} lies outside the action space "
                           f"[{low[dim]:g}, {high[dim]:g}] (allowed margin {ACTION_MARGIN:.0%} of the range)")


@functools.lru_cache(maxsize=16)
def _action_bounds(env_args_json: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(low, high)`` of the env's action space (a Discrete(n) space as [0, n - 1]); None when the
    env is not registered here (foreign data: only finiteness is checked)."""
    import gymnasium as gym
    from gymnasium import spaces

    args = json.loads(env_args_json)
    try:
        gym.spec(args["env_name"])
    except (gym.error.Error, KeyError, TypeError):
        return None
    env = gym.make(args["env_name"], **{k: v for k, v in args.get("env_kwargs", {}).items() if k != "task"})
    try:
        space = env.action_space
    finally:
        env.close()
    if isinstance(space, spaces.Box):
        return np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    if isinstance(space, spaces.Discrete):
        return np.array([space.start], np.float64), np.array([space.start + space.n - 1], np.float64)
    return None


def augment_images(images: torch.Tensor, rng: np.random.Generator, shift: int, jitter: float,
                   return_shift: bool = False):
    """The same random shift and colour jitter for every frame of a window.

    Args:
        images: uint8 (T, 3, H, W).
        return_shift: also return how far the content moved, ``(dx, dy)`` pixels (right, down).
    Returns:
        uint8 (T, 3, H, W) (and the shift).
    """
    x = images.float()
    moved = (0, 0)
    if shift > 0:
        _, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
        dy, dx = rng.integers(0, 2 * shift + 1, size=2)
        x = padded[:, :, dy:dy + h, dx:dx + w]
        moved = (int(shift - dx), int(shift - dy))  # source pixel (r, c) lands at (r + s - dy, c + s - dx)
    if jitter > 0:
        b, c, s = rng.uniform(1 - jitter, 1 + jitter, size=3)
        x = x * b
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * s + grey
    out = x.clamp(0, 255).round().to(torch.uint8)
    return (out, moved) if return_shift else out


def dataset_roles(paths: list[str | os.PathLike] | str | os.PathLike) -> tuple[str, ...]:
    """The roles a dataset's privileged labels name (``object``, ``destination``, ``goal``), in the
    task's order as its first demo stores them; () for a dataset without labels."""
    ref = index_demos(paths, validate=False)[0]
    keys = [k.split("/")[1] for k in reader_of(ref).keys(ref) if k.startswith("labels/")]
    return tuple(dict.fromkeys(keys))
