"""stable-baselines3 parts: language-conditioned features extractors, started from a vl-train model or a BC-Z policy.

``VLAFeaturesExtractor`` reads the observations ``vlagym.policies.sb3_env.SB3Wrapper`` produces:

* ``"instruction"``: a frozen sentence embedding (float Box) used as it is, or hashed word ids (int Box)
  averaged through a trainable embedding table (``HashTextEncoder``'s ids, padding excluded);
* images (uint8, channel-first): a vision encoder whose layers are FiLM-conditioned on the instruction
  (``vlagym.policies.vision.FiLM``): a small Nature-CNN (``"cnn"``, the CPU default), BC-Z's
  FiLM-ResNet-18 (``"resnet18"``) or RT-1's FiLM-EfficientNet-Lite0 (``"efficientnet_lite0"``, ImageNet
  weights with ``pretrained="imagenet-lite0"``), pooled and projected;
* every other Box (``"state"``, ``"proprio"``) flattened.

The features are ``[image features..., vectors..., instruction features]``. Build SB3 policies with
``normalize_images=False``: the encoders scale uint8 images themselves.

``VLFeaturesExtractor`` + ``load_vl_weights`` start the features from a ``vlagym vl-train`` model (``vlagym rl
--vl-model DIR``): its vision tower encodes each image, its text tower the instruction given as the model's
own token ids (``SB3Wrapper`` instruction kind ``"clip"``, see ``vl_instruction``).

``BCZFeaturesExtractor`` + ``init_actor_from_bcz`` start PPO's actor as a trained BC-Z policy: the
extractor is BC-Z's FiLM-ResNet and MLP trunk, and the action head is BC-Z's first-step heads folded
into one linear layer (continuous z-scores de-normalised; gripper logits as the Gaussian mean, whose
sign the env reads), so the deterministic PPO action equals ``BCZPolicy.act``'s at step 0.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from vlagym.policies.vision import FiLM, FiLMEfficientNet, FiLMResNet18, ImageNormalize

IMAGE_BACKBONES = ("cnn", "resnet18", "efficientnet_lite0")


def _is_image(space: gym.Space) -> bool:
    return isinstance(space, spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


def _is_tokens(space: gym.Space) -> bool:
    return isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.integer)


class InstructionFeatures(nn.Module):
    """``obs["instruction"]`` -> ``(B, dim)``: an embedding as it is, or token ids through a trainable table."""

    def __init__(self, space: spaces.Box, token_dim: int = 64) -> None:
        super().__init__()
        self.tokens = _is_tokens(space)
        if self.tokens:
            self.pad = int(space.high.max())  # the wrapper pads with `buckets`, the largest id
            self.table = nn.Embedding(self.pad + 1, token_dim, padding_idx=self.pad)
            nn.init.normal_(self.table.weight[: self.pad], std=token_dim**-0.5)
            self.dim = token_dim
        else:
            self.dim = int(space.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tokens:
            return x.float()
        ids = x.long()
        mask = (ids != self.pad).float().unsqueeze(-1)
        return (self.table(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class FiLMCNN(nn.Module):
    """Nature-CNN (8x8/4, 4x4/2, 3x3/1 convs) with FiLM after every conv; ``(N, 3, H, W)`` uint8-valued ->
    ``(N, out_channels, h, w)``. Small enough for PPO from pixels on a CPU."""

    def __init__(self, cond_dim: int, channels: tuple[int, ...] = (32, 64, 64)) -> None:
        super().__init__()
        self.normalize = ImageNormalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        specs = ((8, 4), (4, 2), (3, 1))
        chans = (3, *channels)
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], k, s) for i, (k, s) in enumerate(specs))
        self.films = nn.ModuleList(FiLM(cond_dim, c) for c in channels)
        self.out_channels = channels[-1]

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        for conv, film in zip(self.convs, self.films, strict=True):
            x = torch.relu(film(conv(x), cond))
        return x


def make_image_encoder(backbone: str, cond_dim: int, pretrained: str | None = None) -> nn.Module:
    if backbone == "cnn":
        if pretrained:
            raise ValueError("image_backbone='cnn' has no pretrained weights; use efficientnet_lite0 for ImageNet")
        return FiLMCNN(cond_dim)
    if backbone == "resnet18":
        return FiLMResNet18(cond_dim, pretrained)
    if backbone == "efficientnet_lite0":
        return FiLMEfficientNet(cond_dim, "efficientnet_lite0", pretrained)
    raise ValueError(f"unknown image_backbone {backbone!r}; choose one of {IMAGE_BACKBONES}")


class VLAFeaturesExtractor(BaseFeaturesExtractor):
    """Language-conditioned features for SB3 policies (see the module docstring).

    Args:
        observation_space: the ``SB3Wrapper`` observation space (must hold ``"instruction"``).
        image_backbone: one of ``IMAGE_BACKBONES``.
        image_features: width of each image's projected features.
        token_dim: embedding width for token-id instructions.
        pretrained: backbone weights (``"imagenet-lite0"`` or a state-dict path; see ``policies.vision``).
        instruction: the wrapper's ``InstructionEncoder`` fields, kept with the saved model so an evaluator
            can rebuild the observations (not used by the network).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        image_backbone: str = "cnn",
        image_features: int = 256,
        token_dim: int = 64,
        pretrained: str | None = None,
        instruction: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict) or "instruction" not in observation_space.spaces:
            raise ValueError(
                f"VLAFeaturesExtractor needs an SB3Wrapper Dict space with 'instruction', got {observation_space}"
            )
        if (instruction or {}).get("kind") == "clip":
            raise ValueError("instruction kind 'clip' (a VL model's token ids) is read by VLFeaturesExtractor, "
                             "not VLAFeaturesExtractor")
        text = InstructionFeatures(observation_space["instruction"], token_dim)
        image_keys = [k for k, s in observation_space.spaces.items() if _is_image(s)]
        vector_keys = [k for k, s in observation_space.spaces.items()
                       if k != "instruction" and k not in image_keys]
        for k in vector_keys:
            if not isinstance(observation_space[k], spaces.Box):
                raise ValueError(f"observation {k!r} has space {observation_space[k]}; expected a Box")
        vec_dim = sum(int(np.prod(observation_space[k].shape)) for k in vector_keys)
        dim = len(image_keys) * image_features + vec_dim + text.dim
        super().__init__(observation_space, features_dim=dim)
        self.text = text
        self.image_keys, self.vector_keys = image_keys, vector_keys
        self.instruction = instruction
        self.encoders = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        for k in image_keys:
            enc = make_image_encoder(image_backbone, text.dim, pretrained)
            c, h, w = observation_space[k].shape
            with torch.no_grad():
                probe = enc(torch.zeros(1, c, h, w), torch.zeros(1, text.dim))
            self.encoders[k] = enc
            # The small CNN keeps the spatial layout (flatten); the deep backbones are average-pooled.
            flat = probe.numel() if image_backbone == "cnn" else probe.shape[1]
            self.projections[k] = nn.Sequential(nn.Linear(flat, image_features), nn.ReLU())
        self.pool = image_backbone != "cnn"

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        cond = self.text(observations["instruction"])
        feats = []
        for k in self.image_keys:
            x = self.encoders[k](observations[k], cond)
            x = x.mean(dim=(2, 3)) if self.pool else x.flatten(1)
            feats.append(self.projections[k](x))
        feats += [observations[k].float().flatten(1) for k in self.vector_keys]
        feats.append(cond)
        return torch.cat(feats, dim=1)


# --- a vl-train model's towers ---------------------------------------------------------------------------------
VL_CONFIG_KEYS = ("arch", "model_cfg", "image_size", "image_mean", "image_std")


def read_vl_extractor_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The architecture part of a vl-train model's ``vl_config.json`` (``VL_CONFIG_KEYS``), given the model folder
    or its run folder: what ``VLFeaturesExtractor`` takes as ``vl_config``."""
    from vlagym.vl.model import read_vl_config, resolve_model_dir

    directory = resolve_model_dir(directory)
    cfg = read_vl_config(directory)
    missing = [k for k in VL_CONFIG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{directory}/vl_config.json lacks {missing}; is it a model folder written by vl-train?")
    return {k: cfg[k] for k in VL_CONFIG_KEYS}


def vl_instruction(vl_config: dict[str, Any]) -> dict[str, Any]:
    """``InstructionEncoder`` fields that give the instruction as the VL model's token ids: its architecture's
    tokenizer at its text context length (``model_cfg["text_cfg"]`` replaces the architecture's, as in open_clip)."""
    import open_clip

    from vlagym.vl.model import register_configs

    register_configs()
    arch = vl_config["arch"]
    model_cfg = vl_config.get("model_cfg") or {}
    base = open_clip.get_model_config(arch)
    if "text_cfg" not in model_cfg and base is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    text_cfg = model_cfg["text_cfg"] if "text_cfg" in model_cfg else base["text_cfg"]
    return {"kind": "clip", "model": arch, "max_tokens": int(text_cfg.get("context_length", 77))}


class VLFeaturesExtractor(BaseFeaturesExtractor):
    """Features from a ``vlagym vl-train`` model's vision and text towers (``vlagym rl --vl-model DIR``).

    Each image (uint8 ``(B, 3, H, W)``) is resized (bilinear, antialiased) to the towers' ``image_size`` when
    the env renders another size, normalised with the model's mean and std and encoded by the vision tower
    (one tower for every camera); the instruction, the VL tokenizer's ids ``(B, context_length)`` (``SB3Wrapper``
    instruction kind ``"clip"``), is encoded by the text tower. The features are a plain concatenation, no
    FiLM: ``[image embedding per image key..., flattened vectors..., text embedding]``, ``(B, n_images * E +
    vec_dim + E)``, with both embeddings L2-normalised as in contrastive training, so the actor and critic
    heads see the joint image-text space the model was trained in.

    The constructor builds the architecture with fresh weights; ``load_vl_weights`` copies the model folder's
    weights in. SB3's ``load`` restores them from the saved zip instead, so a saved model reloads without the
    folder. Build SB3 policies with ``normalize_images=False``.

    Args:
        observation_space: the ``SB3Wrapper`` space, with at least one image and the ``"clip"`` instruction.
        vl_config: the model folder's config (``read_vl_extractor_config``): ``arch``, ``model_cfg``,
            ``image_size``, ``image_mean``, ``image_std``.
        freeze: keep the towers' weights fixed (no gradients, eval mode); by default they train with the policy.
        instruction: the wrapper's ``InstructionEncoder`` fields (``vl_instruction(vl_config)``), checked and kept
            with the saved model so an evaluator can rebuild the observations.
    """

    def __init__(self, observation_space: spaces.Dict, vl_config: dict[str, Any], freeze: bool = False,
                 instruction: dict[str, Any] | None = None) -> None:
        from vlagym.vl.model import build_model

        if not isinstance(observation_space, spaces.Dict) or "instruction" not in observation_space.spaces:
            raise ValueError(
                f"VLFeaturesExtractor needs an SB3Wrapper Dict space with 'instruction', got {observation_space}"
            )
        missing = [k for k in VL_CONFIG_KEYS if k not in vl_config]
        if missing:
            raise ValueError(f"VLFeaturesExtractor's vl_config lacks {missing} (see read_vl_extractor_config)")
        cfg = {k: vl_config[k] for k in VL_CONFIG_KEYS}
        text_space = observation_space["instruction"]
        fields = dict(instruction or {})
        if fields and (fields.get("kind"), fields.get("model")) != ("clip", cfg["arch"]):
            raise ValueError(f"VLFeaturesExtractor reads the VL model's token ids (instruction kind 'clip', model "
                             f"{cfg['arch']!r}; see vl_instruction), got instruction {fields}")
        if not _is_tokens(text_space) or len(text_space.shape) != 1:
            raise ValueError("VLFeaturesExtractor reads the VL model's token ids (SB3Wrapper instruction="
                             f"vl_instruction(vl_config)), got an instruction space {text_space}")
        image_keys = [k for k, s in observation_space.spaces.items() if _is_image(s)]
        if not image_keys:
            raise ValueError(f"the VL model ({cfg['arch']}) has an image encoder, but the observation holds no "
                             f"image (keys {sorted(observation_space.spaces)}); make the env with obs_mode='rgb' "
                             "(the default), not obs_mode='state'")
        vector_keys = [k for k in observation_space.spaces if k != "instruction" and k not in image_keys]
        for k in vector_keys:
            if not isinstance(observation_space[k], spaces.Box):
                raise ValueError(f"observation {k!r} has space {observation_space[k]}; expected a Box")
        size = int(cfg["image_size"])
        clip = build_model(cfg["arch"], cfg["model_cfg"], size)
        context = getattr(clip, "context_length", None)
        if context is not None and text_space.shape[0] > context:
            raise ValueError(f"the instruction has {text_space.shape[0]} tokens, the VL text tower reads at most "
                             f"{context}; wrap the env with instruction=vl_instruction(vl_config)")
        vocab = getattr(clip, "vocab_size", None)
        if vocab is not None and int(text_space.high.max()) >= vocab:
            raise ValueError(f"instruction ids go up to {int(text_space.high.max())}, the VL text tower has "
                             f"{vocab} tokens; wrap the env with instruction=vl_instruction(vl_config)")
        with torch.no_grad():
            embed_dim = int(clip.encode_image(torch.zeros(1, 3, size, size)).shape[1])
        vec_dim = sum(int(np.prod(observation_space[k].shape)) for k in vector_keys)
        super().__init__(observation_space, features_dim=len(image_keys) * embed_dim + vec_dim + embed_dim)
        self.clip = clip
        self.vl_config, self.freeze, self.instruction = cfg, bool(freeze), instruction
        self.image_keys, self.vector_keys = image_keys, vector_keys
        self.image_size, self.embed_dim = size, embed_dim
        self.register_buffer("mean", torch.tensor(cfg["image_mean"], dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(cfg["image_std"], dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        if self.freeze:
            self.clip.requires_grad_(False)
            self.clip.eval()

    def train(self, mode: bool = True) -> VLFeaturesExtractor:
        super().train(mode)
        if self.freeze:
            self.clip.eval()
        return self

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8-valued ``(B, 3, H, W)`` -> L2-normalised ``(B, E)`` image embeddings."""
        x = images.float() / 255.0
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                          align_corners=False, antialias=True)
        return self.clip.encode_image((x - self.mean) / self.std, normalize=True)

    def encode_instruction(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, L)`` (any dtype holding integers) -> L2-normalised ``(B, E)`` text embeddings."""
        return self.clip.encode_text(ids.long(), normalize=True)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            images = [self.encode_images(observations[k]) for k in self.image_keys]
            text = self.encode_instruction(observations["instruction"])
        vectors = [observations[k].float().flatten(1) for k in self.vector_keys]
        return torch.cat([*images, *vectors, text], dim=1)


@torch.no_grad()
def load_vl_weights(module: nn.Module, directory: str | os.PathLike) -> int:
    """Copy a vl-train model's weights (the model folder or its run folder) into every ``VLFeaturesExtractor``
    inside ``module``: an SB3 policy's shared extractor, or the separate actor and critic ones (SAC's target
    critic included). Returns how many extractors were loaded."""
    from safetensors.torch import load_file

    from vlagym.vl.model import WEIGHTS, resolve_model_dir

    directory = resolve_model_dir(directory)
    cfg = read_vl_extractor_config(directory)
    weights = directory / WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing; is {directory} a model folder written by vl-train?")
    extractors = [m for m in module.modules() if isinstance(m, VLFeaturesExtractor)]
    if not extractors:
        raise TypeError(f"load_vl_weights found no VLFeaturesExtractor in {type(module).__name__}")
    state = load_file(str(weights))
    for ext in extractors:
        differ = [k for k in VL_CONFIG_KEYS if ext.vl_config[k] != cfg[k]]
        if differ:
            raise ValueError(f"the extractor was built for another VL architecture than {directory} ({differ} differ)")
        ext.clip.load_state_dict(state)
    return len(extractors)


# --- BC-Z initialisation --------------------------------------------------------------------------------------
class BCZFeaturesExtractor(BaseFeaturesExtractor):
    """BC-Z's FiLM-ResNet-18 and MLP trunk as SB3 features (``(B, hidden_dim)``).

    Args:
        observation_space: ``SB3Wrapper`` space; its instruction must be what the BC-Z text encoder gives:
            the sentence embedding for ``text_encoder="sentence"``, token ids for ``"hash"``.
        bcz_config: the BC-Z ``config.json`` as a dict (the architecture; weights are loaded after).

    BatchNorm stays in eval mode in training too: PPO minibatches must not rewrite the statistics the
    BC weights were trained with.
    """

    def __init__(self, observation_space: spaces.Dict, bcz_config: dict[str, Any],
                 instruction: dict[str, Any] | None = None) -> None:
        from vlagym.policies.bcz.configuration_bcz import BCZConfig
        from vlagym.policies.bcz.modeling_bcz import BCZPolicy

        cfg = BCZConfig.from_dict(bcz_config)
        super().__init__(observation_space, features_dim=cfg.hidden_dim)
        if cfg.history != 1:
            raise ValueError(f"BCZFeaturesExtractor reads one frame per observation; this BC-Z policy stacks "
                             f"history={cfg.history} frames (train the BC policy with history=1 to fine-tune it)")
        space = observation_space["instruction"]
        if cfg.text_encoder in ("hash", "random") and not _is_tokens(space):
            raise ValueError("a BC-Z policy with text_encoder='hash' needs token instructions (SB3Wrapper "
                             "instruction={'kind': 'tokens'})")
        if cfg.text_encoder not in ("hash", "random") and (_is_tokens(space) or not cfg.freeze_text):
            raise ValueError(f"a BC-Z policy with text_encoder={cfg.text_encoder!r} (frozen) needs the same "
                             "sentence embedding as its instruction observation")
        self.bcz = BCZPolicy(cfg, load_pretrained=False)
        self.instruction = instruction
        self.tokens = _is_tokens(space)
        want = (3, *cfg.image_size)
        for key in (cfg.image_key, *cfg.extra_image_keys):
            if key not in observation_space.spaces:
                raise ValueError(f"BC-Z reads camera {key!r}, the env has {sorted(observation_space.spaces)}; make "
                                 "the env with the BC policy's env_args.json (e.g. wrist_camera=True)")
            got = observation_space[key].shape
            if tuple(got) != want:
                raise ValueError(f"BC-Z expects {key!r} of shape {want}, the env gives {tuple(got)}; make "
                                 "the env with the BC policy's image_size")

    def train(self, mode: bool = True) -> BCZFeaturesExtractor:
        super().train(mode)
        self.bcz.eval()
        return self

    def cond(self, instruction: torch.Tensor) -> torch.Tensor:
        if not self.tokens:
            return instruction.float()
        ids = instruction.long()
        table = self.bcz.text.table
        buckets = table.weight.shape[0]
        mask = (ids < buckets).float().unsqueeze(-1)
        emb = nn.functional.embedding(ids.clamp(max=buckets - 1), table.weight)
        return (emb * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        bcz, cfg = self.bcz, self.bcz.config
        extras = tuple(observations[k] for k in cfg.extra_image_keys)
        return bcz.trunk_features(observations[cfg.image_key], observations["proprio"].float(),
                                  self.cond(observations["instruction"]), extras)


@torch.no_grad()
def init_actor_from_bcz(policy, bcz, log_std: float = -2.0) -> None:
    """Load a trained ``BCZPolicy``'s weights into an SB3 actor-critic built with ``BCZFeaturesExtractor``.

    Both extractors (actor and critic) get the BC weights; ``action_net`` becomes the first step of BC-Z's
    heads in env units: ``W = std * W_c``, ``b = mean + std * b_c`` on continuous dimensions, the gripper
    logit on gripper dimensions. ``log_std`` sets the initial exploration noise (small, so early samples
    stay near the BC actions).
    """
    if bcz.config.action_classes:
        raise ValueError("init_actor_from_bcz maps BC-Z's continuous and gripper heads onto a Gaussian actor; this "
                         f"BC-Z policy has {bcz.config.action_classes} discrete actions")
    extractors = {id(m): m for m in (policy.features_extractor, policy.pi_features_extractor,
                                     policy.vf_features_extractor) if m is not None}
    for ext in extractors.values():
        if not isinstance(ext, BCZFeaturesExtractor):
            raise TypeError(f"init_actor_from_bcz needs BCZFeaturesExtractor, got {type(ext).__name__}")
        ext.bcz.load_state_dict(bcz.state_dict())
    codec = bcz.codec
    a = codec.action_dim
    net = policy.action_net
    if net.out_features != a or net.in_features != bcz.config.hidden_dim or len(policy.mlp_extractor.policy_net):
        raise ValueError("the actor must map BC-Z's trunk straight to actions: net_arch=dict(pi=[], vf=[...])")
    weight = torch.zeros(a, net.in_features)
    bias = torch.zeros(a)
    for j, i in enumerate(codec.continuous_dims):
        std, mean = float(codec.std[i]), float(codec.mean[i])
        weight[i] = std * bcz.continuous_head.weight[j]
        bias[i] = mean + std * bcz.continuous_head.bias[j]
    for k, g in enumerate(codec.gripper_dims):
        weight[g] = bcz.gripper_head.weight[k]
        bias[g] = bcz.gripper_head.bias[k]
    net.weight.copy_(weight)
    net.bias.copy_(bias)
    policy.log_std.fill_(log_std)


__all__ = [
    "BCZFeaturesExtractor",
    "FiLMCNN",
    "IMAGE_BACKBONES",
    "InstructionFeatures",
    "VLAFeaturesExtractor",
    "VLFeaturesExtractor",
    "VL_CONFIG_KEYS",
    "init_actor_from_bcz",
    "load_vl_weights",
    "read_vl_extractor_config",
    "vl_instruction",
]
