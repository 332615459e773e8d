"""Pruning a policy's per-step network.

* ``prune_l1_unstructured`` and ``prune_ln_structured`` use ``torch.nn.utils.prune``. They only *mask*:
  the zeroed weights stay in dense tensors of the same shape, so the checkpoint and the compute are
  unchanged (dense kernels do not skip zeros). They report the sparsity they reached; their value is as
  a measurement (how much can go before the policy degrades) and as a step before channel removal.
* ``prune_channels`` removes convolution channels with torch-pruning's ``DependencyGraph``: each group
  of coupled layers (a conv's output channels, the BatchNorm after it, the next conv's inputs) shrinks
  together, so the network gets smaller and faster. Only groups made of convolutions and BatchNorms are
  cut: a stage's output channels are tied to the FiLM projections, the residual additions and the
  pooled features, whose widths the config fixes. What shrank is recorded per layer (``structure``),
  and ``apply_structure`` rebuilds the same shapes on a policy built from its config, so a pruned
  policy saves as safetensors and loads without unpickling anything.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from vlagym.policies.base import Policy
from vlagym.policies.compress.quantize import step_module_names

PRUNABLE = (nn.Conv2d, nn.Linear)


def _check_amount(amount: float) -> float:
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not 0.0 < amount < 1.0:
        raise ValueError(f"pruning amount must be a fraction in (0, 1), got {amount!r}")
    return float(amount)


def sparsity(policy: nn.Module, names: list[str] | None = None) -> dict[str, Any]:
    """Zero weights among the weights of ``names`` (default: every Conv2d and Linear): counts and fraction."""
    mods = dict(policy.named_modules())
    names = names if names is not None else [n for n, m in mods.items() if isinstance(m, PRUNABLE)]
    zeros = total = 0
    for n in names:
        w = mods[n].weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return {"zero_weights": zeros, "weights": total, "sparsity": zeros / total if total else 0.0,
            "modules": len(names)}


def _mask_prune(policy: Policy, types: tuple[type[nn.Module], ...], apply) -> tuple[Policy, dict[str, Any]]:
    model = copy.deepcopy(policy).eval()
    names = step_module_names(model, types)
    if not names:
        raise ValueError(f"{policy.name}: its step network calls no {[t.__name__ for t in types]} layer to prune")
    mods = dict(model.named_modules())
    for n in names:
        apply(mods[n])
        prune.remove(mods[n], "weight")  # the mask becomes plain zeros: an ordinary, saveable state dict
    return model, {**sparsity(model, names), "masked_only": True}


def prune_l1_unstructured(policy: Policy, amount: float) -> tuple[Policy, dict[str, Any]]:
    """A copy of ``policy`` with the smallest ``amount`` of each per-step Conv2d's and Linear's weights (by
    magnitude, layer by layer) set to zero, and its sparsity. Masks only: same shapes, same compute."""
    amount = _check_amount(amount)
    return _mask_prune(policy, PRUNABLE, lambda m: prune.l1_unstructured(m, "weight", amount=amount))


def prune_ln_structured(policy: Policy, amount: float, n: int = 1) -> tuple[Policy, dict[str, Any]]:
    """A copy of ``policy`` with ``amount`` of each per-step Conv2d's output channels (smallest L``n`` norm)
    set to zero, and its sparsity. Masks only: the channels are zero, not removed (``prune_channels``
    removes them)."""
    amount = _check_amount(amount)
    return _mask_prune(policy, (nn.Conv2d,), lambda m: prune.ln_structured(m, "weight", amount=amount, n=n, dim=0))


# --- channel removal (torch-pruning) ------------------------------------------------------------------------
def _shape_of(module: nn.Module) -> dict[str, Any] | None:
    if isinstance(module, nn.Conv2d):
        return {"kind": "Conv2d", "in_channels": module.in_channels, "out_channels": module.out_channels,
                "groups": module.groups}
    if isinstance(module, nn.BatchNorm2d):
        return {"kind": "BatchNorm2d", "num_features": module.num_features}
    if isinstance(module, nn.Linear):
        return {"kind": "Linear", "in_features": module.in_features, "out_features": module.out_features}
    return None


def structure_of(policy: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """The layers of ``policy`` whose widths differ from ``reference``'s (same architecture): name -> shape."""
    ref = dict(reference.named_modules())
    out = {}
    for name, m in policy.named_modules():
        shape = _shape_of(m)
        if shape is not None and shape != _shape_of(ref[name]):
            out[name] = shape
    return out


def apply_structure(policy: nn.Module, structure: dict[str, dict[str, Any]]) -> nn.Module:
    """Resize the layers named in ``structure`` (``structure_of``'s output) in place, with uninitialised
    weights of the recorded widths: the architecture a pruned checkpoint's weights fit."""
    mods = dict(policy.named_modules())
    for name, shape in structure.items():
        m = mods.get(name)
        kind = shape.get("kind") if isinstance(shape, dict) else None
        if m is None or _shape_of(m) is None or _shape_of(m)["kind"] != kind:
            raise ValueError(f"structure names {name!r} as a {kind}, but the policy has "
                             f"{type(m).__name__ if m is not None else 'no such module'} there")
        w = m.weight
        if kind == "Conv2d":
            m.in_channels, m.out_channels, m.groups = shape["in_channels"], shape["out_channels"], shape["groups"]
            m.weight = nn.Parameter(w.new_empty(m.out_channels, m.in_channels // m.groups, *w.shape[2:]))
            if m.bias is not None:
                m.bias = nn.Parameter(w.new_empty(m.out_channels))
        elif kind == "BatchNorm2d":
            c = m.num_features = shape["num_features"]
            if m.affine:
                m.weight, m.bias = nn.Parameter(w.new_empty(c)), nn.Parameter(w.new_empty(c))
            if m.track_running_stats:
                m.running_mean, m.running_var = w.new_zeros(c), w.new_ones(c)
        else:
            m.in_features, m.out_features = shape["in_features"], shape["out_features"]
            m.weight = nn.Parameter(w.new_empty(m.out_features, m.in_features))
            if m.bias is not None:
                m.bias = nn.Parameter(w.new_empty(m.out_features))
    return policy


def prune_channels(policy: Policy, amount: float, inputs: dict[str, torch.Tensor] | None = None
                   ) -> tuple[Policy, dict[str, Any]]:
    """A copy of ``policy`` with ``amount`` of the output channels of every prunable convolution group of its
    FiLM image backbones (BC-Z's ResNet-18s, RT-1's EfficientNet) removed, smallest group L1 norm first and
    at least one channel kept, and a report: parameters before and after, groups cut, and the ``structure``
    to save. ``inputs`` are the step inputs whose image and instruction embedding are traced (default: an
    example observation's).

    Each backbone is traced on its own: torch-pruning 1.6 cannot follow the concatenations of the heads
    (image features beside proprio). A group that feeds the backbone's output is kept, since the layers
    after it (pooling, projection) have config-fixed widths."""
    import torch_pruning as tp

    from vlagym.policies.compress.onnx_backend import example_step_inputs
    from vlagym.policies.vision import FiLMEfficientNet, FiLMResNet18

    amount = _check_amount(amount)
    before = policy.num_parameters()
    model = copy.deepcopy(policy).eval()
    inputs = inputs if inputs is not None else example_step_inputs(model)
    backbones = [m for m in model.modules() if isinstance(m, (FiLMResNet18, FiLMEfficientNet))]
    if not backbones or "cond" not in inputs:
        raise ValueError(f"{policy.name}: channel pruning covers the FiLM convolutional backbones of bcz and rt1; "
                         f"this policy has none (a ViT tower's only convolution is tied to its width)")
    groups = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unwrapped.*")  # FiLM's bare parameters
        for backbone in backbones:
            groups += _cut_groups(tp, backbone, (inputs["image"], inputs["cond"]), amount)
    if not groups:
        raise ValueError(f"{policy.name}: no convolution group could be cut at amount={amount} (every group is "
                         "tied to a fixed width, or too narrow)")
    # Against the config's own architecture, so a policy pruned twice records every layer that ever shrank.
    structure = structure_of(model, type(policy)(copy.deepcopy(policy.config), load_pretrained=False))
    model.__dict__["structure"] = structure
    after = model.num_parameters()
    return model, {"params_before": before, "params_after": after, "params_ratio": after / before,
                   "groups_pruned": groups, "layers_resized": len(structure), "structure": structure}


@torch.no_grad()
def _output_layers(module: nn.Module, args: tuple[torch.Tensor, ...]) -> set[int]:
    """ids of the layers whose outputs are ``module``'s outputs."""
    outs: dict[int, int] = {}
    # Hooks fire inner module first, so the outermost producer of a tensor (bn2, not its activation) wins.
    hooks = [m.register_forward_hook(lambda mod, a, out: outs.__setitem__(id(out), id(mod)))
             for m in module.modules() if m is not module]
    try:
        result = module(*args)
    finally:
        for h in hooks:
            h.remove()
    results = result if isinstance(result, (tuple, list)) else (result,)
    return {outs[id(r)] for r in results if id(r) in outs}


def _cuttable(module: nn.Module) -> bool:
    """A layer a cut group may hold: convolutions, BatchNorms and torch-pruning's stand-ins for tensor
    operations (ReLU, additions); a Linear (FiLM), LayerNorm or anything else fixes the width."""
    return isinstance(module, (nn.Conv2d, nn.BatchNorm2d)) or type(module).__module__.startswith("torch_pruning")


def _cut_groups(tp, module: nn.Module, args: tuple[torch.Tensor, ...], amount: float) -> int:
    """Cut ``amount`` of each prunable output-channel group of ``module``'s convolutions; -> groups cut."""
    fixed = _output_layers(module, args)
    graph = tp.DependencyGraph().build_dependency(module, example_inputs=args)
    importance = tp.importance.MagnitudeImportance(p=1)
    done: set[int] = set()
    groups = 0
    for conv in [m for m in module.modules() if isinstance(m, nn.Conv2d)]:
        if id(conv) in done:
            continue
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        targets = [dep.target.module for dep, _ in group]
        # Convs whose outputs this group holds are decided with it; those whose inputs it holds are not.
        done.update(id(dep.target.module) for dep, _ in group
                    if isinstance(dep.target.module, nn.Conv2d) and graph.is_out_channel_pruning_fn(dep.handler))
        if not all(_cuttable(t) for t in targets) or fixed & {id(t) for t in targets}:
            continue  # tied to a FiLM projection, a residual sum or the backbone's output: fixed widths
        n = min(int(conv.out_channels * amount), conv.out_channels - 1)
        if n < 1:
            continue
        scores = importance(group)
        idxs = torch.argsort(scores)[:n].tolist()
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=idxs)
        if graph.check_pruning_group(group):
            group.prune()
            groups += 1
    return groups
