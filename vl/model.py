"""The open_clip model that vl-train trains, its inputs, and its saved form.

A pre-trained model is a folder::

    open_clip_model.safetensors   the open_clip state dict (loadable by ``open_clip.create_model(...,
                                  pretrained=<this file>)`` with the same architecture)
    vl_config.json                architecture name, config overrides, image size, normalisation, context length

``vlagym.policies`` reads the same folder (``policy.pretrained_vl=DIR``) to start the CLIP-fusion policy's
towers from it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

logger = logging.getLogger(__name__)

WEIGHTS = "open_clip_model.safetensors"
CONFIG = "vl_config.json"
DEFAULT_ARCH = "vlagym-clip-tiny"
CONFIG_DIR = Path(__file__).resolve().parent  # open_clip model configs (<arch>.json)
# A CPU-sized CLIP for 64-96 px scenes: ViT with 8-px patches (an 8x8 grid at 64 px, fine enough to
# point at objects a few pixels wide), 4 layers of width 128; a 3-layer text Transformer.
DEFAULT_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}


def register_configs() -> None:
    """Add vlagym's own open_clip architectures (``vlagym-clip-tiny``), once per process."""
    import open_clip

    if DEFAULT_ARCH not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR / f"{DEFAULT_ARCH}.json")


def build_model(arch: str, model_cfg: dict[str, Any] | None, image_size: int,
                pretrained: str | None = None) -> nn.Module:
    """An open_clip model at ``image_size``; ``model_cfg`` top-level keys replace the architecture's.

    ``pretrained`` (an open_clip tag or file) that fails to load is logged and the model starts from
    random weights, as the CLIP-fusion policy does; set HF_HUB_OFFLINE=1 to fail fast without a network.
    """
    import open_clip

    register_configs()
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    kwargs = dict(model_cfg or {})
    kwargs["force_image_size"] = image_size
    if "vision_cfg" in kwargs:
        kwargs["vision_cfg"] = {**kwargs["vision_cfg"], "image_size": image_size}
    if pretrained:
        try:
            return open_clip.create_model(arch, pretrained=pretrained, **kwargs)
        except Exception as e:  # download and file errors vary by source; the fallback is the same
            logger.warning("could not load open_clip %s weights %r (%s); starting from random weights",
                           arch, pretrained, e)
    return open_clip.create_model(arch, pretrained=None, **kwargs)


class VLModel(nn.Module):
    """An open_clip model with its tokenizer and image normalisation; images are uint8 ``(B, H, W, 3)``."""

    def __init__(self, arch: str = DEFAULT_ARCH, model_cfg: dict[str, Any] | None = None, image_size: int = 64,
                 pretrained: str | None = None) -> None:
        super().__init__()
        import open_clip

        self.arch, self.model_cfg, self.image_size = arch, model_cfg, int(image_size)
        self.clip = build_model(arch, model_cfg, image_size, pretrained)
        ctx = int((model_cfg or {}).get("text_cfg", {}).get("context_length", 0)) or None
        self.tokenizer = open_clip.get_tokenizer(arch, **({"context_length": ctx} if ctx else {}))
        pre = open_clip.get_model_preprocess_cfg(self.clip)
        mean = pre.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = pre.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    def pixels(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(images):
            images = np.asarray(images)
            if not images.flags.writeable:  # read from a file: torch warns about read-only arrays
                images = images.copy()
            images = torch.from_numpy(images)
        x = images.to(self.device)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (B, H, W, 3), got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def encode_image(self, images) -> torch.Tensor:
        """``(B, E)`` image embeddings (not normalised)."""
        return self.clip.encode_image(self.pixels(images))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``(B, E)`` text embeddings (not normalised)."""
        return self.clip.encode_text(self.tokenizer(list(texts)).to(self.device))

    def patch_features(self, images) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Pooled embedding ``(B, E)``, patch embeddings ``(B, N, E)`` in the joint space (each patch token
        through the same final norm and projection as the pooled one) and the patch grid ``(h, w)``."""
        visual = self.clip.visual
        if not hasattr(visual, "_embeds"):
            raise ValueError(f"patch features need an open_clip VisionTransformer; {self.arch} has "
                             f"{type(visual).__name__}")
        x = visual._embeds(self.pixels(images))
        x = visual.transformer(x)
        pooled, tokens = visual._pool(x)
        if visual.final_ln_after_pool or tokens is None:
            tokens = visual.ln_post(x[:, 1:])
        if visual.proj is not None:
            pooled, tokens = pooled @ visual.proj, tokens @ visual.proj
        return pooled, tokens, tuple(visual.grid_size)

    # --- saving --------------------------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "model_cfg": self.model_cfg, "image_size": self.image_size,
                "image_mean": self.mean.flatten().tolist(), "image_std": self.std.flatten().tolist()}

    def save(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the folder atomically (a temporary folder renamed over the old one)."""
        out = Path(directory)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.clip.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps({**self.config_dict(), **(extra or {})}, indent=2))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            for p in old.iterdir():
                p.unlink()
            old.rmdir()
        else:
            os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> VLModel:
        cfg = read_vl_config(directory)
        model = cls(cfg["arch"], cfg["model_cfg"], cfg["image_size"])
        model.clip.load_state_dict(load_file(str(Path(directory) / WEIGHTS)))
        return model.to(device)


def read_vl_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; is {directory} a model folder written by vl-train?")
    return json.loads(path.read_text())


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A vl-train model folder, given it or the run folder holding ``model/``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a vl-train run or model folder")
    if (path / CONFIG).exists():
        return path
    if (path / "model" / CONFIG).exists():
        return path / "model"
    raise FileNotFoundError(f"{path} holds no {CONFIG}; pass a vl-train run or model folder")


def open_clip_for_policy(config) -> nn.Module:
    """The CLIP-fusion policy's towers from ``config.pretrained_vl`` (a ``CLIPConfig``): sets the config's
    architecture and normalisation to the pre-trained model's and loads its weights at the policy's image size."""
    import open_clip

    directory = resolve_model_dir(config.pretrained_vl)
    vl = read_vl_config(directory)
    register_configs()
    config.clip_model = vl["arch"]
    config.clip_model_cfg = json.loads(json.dumps(vl["model_cfg"])) if vl["model_cfg"] else None
    config.clip_pretrained = None
    config.image_mean, config.image_std = tuple(vl["image_mean"]), tuple(vl["image_std"])
    size = list(config.image_size)
    kwargs = dict(config.clip_model_cfg or {})
    kwargs["force_image_size"] = size
    if "vision_cfg" in kwargs:
        kwargs["vision_cfg"] = {**kwargs["vision_cfg"], "image_size": size}
    model = open_clip.create_model(config.clip_model, pretrained=None, **kwargs)
    # load_checkpoint resizes the position embedding from the pre-training image size to the env's.
    open_clip.load_checkpoint(model, str(directory / WEIGHTS))
    logger.info("CLIP towers start from the vl-train model in %s (%s)", directory, config.clip_model)
    return model
