"""Training windows over demonstration datasets, with on-the-fly image augmentation.

A sample at step ``t`` of a demo holds the ``history`` observations ending at ``t`` and the
``horizon`` actions starting at ``t`` (RT-1: history 6, horizon 1; BC-Z: history 1, horizon 10).
Windows that cross an episode edge are padded by repeating the edge entry, and masks say
which entries are real.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from vlagym.agents.dataset import DemoRef, compute_stats, index_demos

ACTION_KEYS = ("actions", "expert_actions")


class DemoWindows(Dataset):
    """``torch.utils.data.Dataset`` of windows over one or many dataset folders or shards.

    Args:
        paths: dataset folders or shard files.
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

    Each item is a dict:
        ``<image_key>``: uint8 (history, 3, H, W); ``obs_mask``: bool (history,);
        ``proprio``: float32 (history, P); ``actions``: float32 (horizon, A);
        ``action_mask``: bool (horizon,); ``instruction``: str; ``index``: (demo, t).
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
        self.augment, self.shift, self.jitter = augment, shift, jitter
        self._index = [(d, t) for d, ref in enumerate(self.demos) for t in range(ref.length)]
        self._files: dict[Path, h5py.File] = {}
        self._check_keys()

    def _check_keys(self) -> None:
        with h5py.File(self.demos[0].path, "r") as f:
            obs = f["data"][self.demos[0].key]["obs"]
            missing = [k for k in (*self.image_keys, "proprio") if k not in obs]
            if missing:
                raise KeyError(f"{self.demos[0].path}: observations lack {missing}; have {sorted(obs)}")
        if self.action_key != "actions":  # opened and closed here: h5py handles must not cross a fork
            for path in dict.fromkeys(ref.path for ref in self.demos):  # each shard once
                with h5py.File(path, "r") as f:
                    lacking = [r.key for r in self.demos if r.path == path and self.action_key not in f["data"][r.key]]
                if lacking:
                    raise KeyError(f"{path} [{lacking[0]}] has no {self.action_key!r} (collected before the "
                                   f"expert's noiseless actions were stored); recollect it or train on 'actions'")

    def __len__(self) -> int:
        return len(self._index)

    def _file(self, path: Path) -> h5py.File:
        # One handle per file per worker process (h5py handles must not cross a fork).
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = h5py.File(path, "r")
        return f

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """``key`` is an index, or ``(index, augmentation_seed)`` for reproducible augmentation."""
        i, aug_seed = key if isinstance(key, tuple) else (key, None)
        d, t = self._index[i]
        ref = self.demos[d]
        demo = self._file(ref.path)["data"][ref.key]
        n = ref.length
        lo = max(0, t - self.history + 1)
        obs_idx = np.arange(t - self.history + 1, t + 1)
        obs_mask = obs_idx >= 0
        take_obs = np.clip(obs_idx, 0, None) - lo  # pad by repeating the first frame
        act_idx = np.arange(t, t + self.horizon)
        action_mask = act_idx < n
        hi = min(n, t + self.horizon)
        take_act = np.clip(act_idx, None, n - 1) - t  # pad by repeating the last action
        item: dict[str, Any] = {
            "obs_mask": torch.from_numpy(obs_mask),
            "action_mask": torch.from_numpy(action_mask),
            "proprio": torch.from_numpy(demo["obs"]["proprio"][lo:t + 1][take_obs].astype(np.float32)),
            "actions": torch.from_numpy(demo[self.action_key][t:hi][take_act].astype(np.float32)),
            "instruction": ref.instruction,
            "index": torch.tensor([d, t]),
        }
        gen = np.random.default_rng(aug_seed) if self.augment else None
        for key in self.image_keys:
            frames = demo["obs"][key][lo:t + 1][take_obs]  # (history, H, W, 3) uint8
            images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
            item[key] = augment_images(images, gen, self.shift, self.jitter) if gen is not None else images
        return item

    def action_stats(self) -> dict[str, list[float]]:
        """Per-dimension mean, std, min, max of the labels (stats.json when it covers these demos)."""
        return self._stats(self.action_key)

    def proprio_stats(self) -> dict[str, list[float]]:
        return self._stats("proprio")

    def _stats(self, key: str) -> dict[str, list[float]]:
        stats_file = Path(self.paths[0]) / "stats.json"
        if self.max_demos is None and len(self.paths) == 1 and stats_file.exists():
            stats = json.loads(stats_file.read_text())
            if key in stats:
                return stats[key]
        return compute_stats(self.demos, keys=(key,))[key]


def augment_images(images: torch.Tensor, rng: np.random.Generator, shift: int, jitter: float) -> torch.Tensor:
    """The same random shift and colour jitter for every frame of a window.

    Args:
        images: uint8 (T, 3, H, W).
    Returns:
        uint8 (T, 3, H, W).
    """
    x = images.float()
    if shift > 0:
        _, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
        dy, dx = rng.integers(0, 2 * shift + 1, size=2)
        x = padded[:, :, dy:dy + h, dx:dx + w]
    if jitter > 0:
        b, c, s = rng.uniform(1 - jitter, 1 + jitter, size=3)
        x = x * b
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * s + grey
    return x.clamp(0, 255).round().to(torch.uint8)
