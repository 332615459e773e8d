"""The policy registry: a policy is one folder with a ``@register_policy`` modeling file, or an entry point.

The toy policy below is written to a temporary folder and found exactly as a built-in one would be (as a
subpackage of ``vlagym.policies``), then built, trained one step, saved and loaded by name with no other
file edited: the promise of ``vlagym.policies.registry``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch

import vlagym.policies
from vlagym.policies import config_class, load_policy, make_policy, policy_class, policy_names, registry
from vlagym.policies.base import Policy, PolicyConfig
from vlagym.policies.train import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from policy_helpers import STATS, observation, spaces_for, synthetic_batch  # noqa: E402

TOY_CONFIG = '''
from dataclasses import dataclass

from vlagym.policies.base import PolicyConfig


@dataclass
class ToyConfig(PolicyConfig):
    horizon: int = 2
'''
TOY_MODELING = '''
import torch
from torch import nn

from vlagym.policies.base import Policy
from vlagym.policies.registry import register_policy
from vlagym.policies.toy.configuration_toy import ToyConfig


@register_policy("toy")
class ToyPolicy(Policy):
    """A learned constant action chunk: the least a policy needs."""

    config_class = ToyConfig

    def __init__(self, config, load_pretrained=True):
        super().__init__(config)
        self.chunk = nn.Parameter(torch.zeros(config.horizon, config.action_dim))

    def _plan(self, frame):
        return self.chunk

    def predict(self, batch):
        return self.chunk.expand(len(batch["instruction"]), -1, -1)

    def loss(self, batch):
        loss = (self.predict(batch) - batch["actions"][:, : self.config.horizon]).pow(2).mean()
        return loss, {"mse": float(loss.detach())}
'''


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry as it is, restored afterwards, so that a test's policies do not leak into others."""
    monkeypatch.setattr(registry, "_POLICIES", dict(registry._POLICIES))
    monkeypatch.setattr(registry, "_BROKEN", dict(registry._BROKEN))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("vlagym.policies.toy", "vlagym_plugin_")):
            del sys.modules[name]


def test_builtin_policies_register_on_import_with_their_folder_names():
    folders = sorted(p.parent.name for p in Path(vlagym.policies.__file__).parent.glob("*/modeling_*.py"))
    assert sorted(policy_names()) == folders and folders
    for name in policy_names():
        cls = policy_class(name)
        assert cls.name == name and cls.config_class is config_class(name) and config_class(name).type == name
        assert cls.__module__ == f"vlagym.policies.{name}.modeling_{name}"


def test_every_registered_policy_declares_tiny_variants():
    """The policy tests and the regression artifact build each policy from them; one without is untested."""
    missing = [name for name in policy_names() if not config_class(name).tiny_variants()]
    assert not missing, f"{missing} declare no tiny_variants() on their config class (see PolicyConfig)"
    for name in policy_names():
        fields = {f.name for f in dataclasses.fields(config_class(name))}
        for suffix, overrides in config_class(name).tiny_variants().items():
            assert "-" not in suffix and set(overrides) <= fields, (name, suffix, sorted(set(overrides) - fields))


def test_unknown_names_list_the_registered_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown policy 'act'; registered: bcz, clip, rt1"):
        policy_class("act")
    with pytest.raises(ValueError, match="unknown policy 'act'; registered: "):
        TrainConfig(data=["x"], policy="act")
    (tmp_path / "config.json").write_text('{"type": "act"}')
    with pytest.raises(ValueError, match="'type' is 'act', not a registered policy \\(bcz, clip, rt1"):
        load_policy(tmp_path)


def test_cli_refuses_an_unknown_policy_naming_the_registered_ones(capsys):
    from vlagym.experiments.cli import main

    with pytest.raises(SystemExit):
        main(["pipeline", "--policy", "act", "--out", "unused"])
    assert "unknown policy 'act'; registered: bcz, clip, rt1" in capsys.readouterr().err


def test_a_policy_folder_is_all_a_new_policy_needs(tmp_path, monkeypatch, scratch_registry):
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "__init__.py").write_text('"""A toy policy."""\n')
    (folder / "configuration_toy.py").write_text(TOY_CONFIG)
    (folder / "modeling_toy.py").write_text(TOY_MODELING)
    # As if the folder sat in policies/: discovery walks the package's path.
    monkeypatch.setattr(vlagym.policies, "__path__", [*vlagym.policies.__path__, str(tmp_path)])
    registry.discover_policies()

    assert policy_names()[-1] == "toy" and config_class("toy").type == "toy"
    torch.manual_seed(0)
    policy = make_policy("toy", *spaces_for(), stats=STATS)
    loss, _ = policy.loss(synthetic_batch(policy.config))
    loss.backward()
    assert policy.chunk.grad is not None
    assert policy.eval().act(observation()).shape == (5,)
    policy.save_pretrained(tmp_path / "saved")
    assert type(load_policy(tmp_path / "saved")) is policy_class("toy")


def test_entry_points_register_third_party_policies(tmp_path, monkeypatch, scratch_registry):
    (tmp_path / "vlagym_plugin_good.py").write_text(TOY_MODELING.replace(
        "from vlagym.policies.toy.configuration_toy import ToyConfig", TOY_CONFIG).replace('"toy"', '"plugged"'))
    (tmp_path / "vlagym_plugin_bad.py").write_text("raise RuntimeError('no GPU driver')\n")
    (tmp_path / "vlagym_plugin_empty.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [importlib.metadata.EntryPoint(name, value, registry.ENTRY_POINT_GROUP)
              for name, value in (("plugged", "vlagym_plugin_good"), ("broken", "vlagym_plugin_bad"),
                                  ("hollow", "vlagym_plugin_empty"))]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [p for p in points if p.group == group])
    registry.discover_policies()

    assert "plugged" in policy_names() and "broken" not in policy_names()
    assert make_policy("plugged", *spaces_for(), stats=STATS).name == "plugged"
    with pytest.raises(ValueError, match="'broken' is not available: .*'vlagym_plugin_bad' failed to load: "
                                         "RuntimeError: no GPU driver"):
        policy_class("broken")
    with pytest.raises(ValueError, match="'hollow' is not available: .* registered no policy 'hollow'"):
        policy_class("hollow")


def test_register_policy_refuses_clashes(scratch_registry):
    @dataclasses.dataclass
    class OwnConfig(PolicyConfig):
        pass

    def policy(config: type[PolicyConfig]) -> type[Policy]:
        return type("Made", (Policy,), {"config_class": config})

    with pytest.raises(ValueError, match="must be a Python identifier"):
        registry.register_policy("my-policy")
    with pytest.raises(ValueError, match="'bcz' is taken by vlagym.policies.bcz.modeling_bcz.BCZPolicy"):
        registry.register_policy("bcz")(policy(OwnConfig))
    with pytest.raises(ValueError, match="config class BCZConfig is already the 'bcz' policy's"):
        registry.register_policy("mine")(policy(config_class("bcz")))
    with pytest.raises(TypeError, match="must be its own PolicyConfig subclass"):
        registry.register_policy("mine")(policy(PolicyConfig))
    with pytest.raises(TypeError, match="decorates a Policy subclass"):
        registry.register_policy("mine")(OwnConfig)
    assert registry.register_policy("mine")(policy(OwnConfig)).name == "mine" and OwnConfig.type == "mine"
    assert policy_names()[-1] == "mine" and config_class("mine") is OwnConfig
