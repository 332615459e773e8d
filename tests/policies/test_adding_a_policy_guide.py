"""docs/adding-a-policy.md, followed as written: its three files make a folder that discovery finds, the
policy trains with ``vlagym.policies.train`` on collected data (the shared ``touch_data``), loads by its
config's type and acts."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest

import vlagym.policies
from vlagym.policies import policy_class, policy_names, registry

GUIDE = "adding-a-policy.md"


@pytest.fixture
def guide_policy(tmp_path, monkeypatch, guide_blocks):
    """The guide's folder written out and discovered as a subpackage of ``vlagym.policies``; the registry
    and modules restored afterwards."""
    files = guide_blocks(GUIDE, "file")
    assert sorted(files) == ["convmlp/__init__.py", "convmlp/configuration_convmlp.py",
                             "convmlp/modeling_convmlp.py"], sorted(files)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(registry, "_POLICIES", dict(registry._POLICIES))
    monkeypatch.setattr(registry, "_BROKEN", dict(registry._BROKEN))
    monkeypatch.setattr(vlagym.policies, "__path__", [*vlagym.policies.__path__, str(tmp_path)])
    registry.discover_policies()
    yield
    for name in [m for m in sys.modules if m.startswith("vlagym.policies.convmlp")]:
        del sys.modules[name]


def test_discovery_finds_the_guides_folder(guide_policy):
    assert "convmlp" in policy_names()
    cls = policy_class("convmlp")
    assert cls.__module__ == "vlagym.policies.convmlp.modeling_convmlp" and cls.config_class.type == "convmlp"
    assert cls.config_class.tiny_variants()[""]["channels"] == 8


def test_the_guides_policy_trains_loads_and_acts(guide_policy, touch_data, tmp_path, guide_blocks):
    scope = {"DATA": str(touch_data), "OUT": str(tmp_path / "run")}
    exec(compile(guide_blocks(GUIDE, "check")["train"], "adding-a-policy.md: train", "exec"), scope)
    summary, policy = scope["summary"], scope["policy"]
    assert np.isfinite(summary["final_loss"])
    env = gym.make("vlagym/TabletopTouch-v0", image_size=32)
    obs, _ = env.reset(seed=5)
    policy.reset()
    for _ in range(3):
        action = policy.act(obs)
        assert action.shape == (5,) and env.action_space.contains(action)
        obs, *_ = env.step(action)
    env.close()


def test_the_guides_policy_learns(guide_policy, touch_data):
    """Its loss falls on one batch: the parts are wired to the targets, not only shaped right."""
    from vlagym.dataio.windows import DemoWindows
    from vlagym.policies import make_policy
    from vlagym.testing import overfit_losses

    env = gym.make("vlagym/TabletopTouch-v0", image_size=32)
    windows = DemoWindows([str(touch_data)], history=1, horizon=4)
    policy = make_policy("convmlp", env.observation_space, env.action_space, stats=windows.action_stats(),
                         **policy_class("convmlp").config_class.tiny_variants()[""])
    env.close()
    from vlagym.policies.train import collate

    batch = collate([windows[i] for i in range(8)])
    losses = overfit_losses(policy, batch, steps=60)
    assert losses[-1] < 0.5 * losses[0], losses


def test_compression_refuses_a_policy_without_a_step_network(guide_policy, touch_data, tmp_path):
    """The guide's policy plans with its own ``_plan``; ONNX export asks for the step network and says so."""
    from vlagym.policies import make_policy
    from vlagym.policies.compress import compress_policy

    env = gym.make("vlagym/TabletopTouch-v0", image_size=32)
    policy = make_policy("convmlp", env.observation_space, env.action_space,
                         **policy_class("convmlp").config_class.tiny_variants()[""])
    env.close()
    policy.save_pretrained(tmp_path / "convmlp")
    with pytest.raises(ValueError, match=r"ConvMLPPolicy \('convmlp'\) defines no step_module\(\); compression"):
        compress_policy(tmp_path / "convmlp", "onnx", tmp_path / "out")
