"""Int8 quantization of a policy's per-step network.

* ``quantize_dynamic_int8``: PyTorch dynamic quantization (``torch.ao.quantization.quantize_dynamic``) of
  the ``nn.Linear`` layers a step runs: int8 weights, activations quantized on the fly per call. The
  instruction encoder runs once per episode and stays float. Convolutions are untouched (dynamic
  quantization has no int8 convolution).
* ``quantize_onnx_static``: static, calibrated int8 of the exported step network's convolutions (the
  image backbone) with ONNX Runtime (``quantize_static``, QDQ format, MinMax calibration over real
  observations' step inputs). Static quantization needs activation ranges, hence a calibration set.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlagym.policies.base import Policy


@torch.no_grad()
def step_module_names(policy: Policy, types: tuple[type[nn.Module], ...],
                      inputs: dict[str, torch.Tensor] | None = None) -> list[str]:
    """Names (in ``policy``) of the modules of ``types`` that one step of the policy calls, found by
    running the step network once with forward hooks: per-step work, not the text encoder's."""
    from vlagym.policies.compress.onnx_backend import example_step_inputs

    inputs = inputs if inputs is not None else example_step_inputs(policy)
    called: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, args, out, n=name: called.append(n))
             for name, m in policy.named_modules() if isinstance(m, types)]
    try:
        policy.eval()
        policy.step_module()(*inputs.values())
    finally:
        for h in hooks:
            h.remove()
    return sorted(dict.fromkeys(called))


def quantize_dynamic_int8(policy: Policy, modules: list[str] | None = None) -> Policy:
    """A copy of ``policy`` whose per-step ``nn.Linear`` layers (or ``modules``, by name) are dynamically
    quantized to int8 (per-tensor weights, x86 fbgemm kernels). The copy acts like the policy; it does not
    train, export or save its int8 weights (``compress_policy`` saves the float weights and the list of
    modules, and quantization is repeated on load: it is a deterministic function of the float weights).
    """
    names = modules if modules is not None else step_module_names(policy, (nn.Linear,))
    if not names:
        raise ValueError(f"{policy.name}: its step network calls no nn.Linear layer to quantize")
    model = copy.deepcopy(policy).eval()
    engines = torch.backends.quantized.supported_engines
    if "x86" in engines or "fbgemm" in engines:
        torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"
    with warnings.catch_warnings():
        # torch 2.14 announces that eager quantization moves to torchao; it still works and ships here.
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        torch.ao.quantization.quantize_dynamic(model, qconfig_spec=set(names), dtype=torch.qint8, inplace=True)
    for layer in model.modules():
        # nn.TransformerEncoderLayer's fused eval path reads linear1.weight as a tensor, which a quantized
        # Linear does not have; this flag is the layer's own switch to its module-by-module path (the same
        # computation), and only the fused path reads it.
        if isinstance(layer, nn.TransformerEncoderLayer) and not isinstance(layer.linear1, nn.Linear):
            layer.activation_relu_or_gelu = 0
    model.__dict__["quantized_modules"] = list(names)
    return model


class _Reader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over recorded step inputs."""

    def __init__(self, samples: list[dict[str, np.ndarray]], names: list[str]) -> None:
        self._it = iter([{n: s[n] for n in names} for s in samples])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_onnx_static(model: str | Path, out: str | Path, calibration: list[dict[str, np.ndarray]],
                         op_types: tuple[str, ...] = ("Conv",), per_channel: bool = True) -> Path:
    """Statically quantize the ONNX step network ``model`` into ``out`` (QDQ: uint8 activations, int8
    weights, per output channel), calibrated on ``calibration`` (``step_inputs_from`` over real
    observations). Only ``op_types`` are quantized: by default the convolutions, where the backbone's
    compute is; the heads and the Transformers stay float.

    Raises ``ValueError`` on an empty calibration set or one that lacks the model's inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from vlagym.policies.compress.onnx_backend import make_session

    if not calibration:
        raise ValueError("static int8 quantization needs a calibration set of real observations; got none "
                         "(pass calibration_env=<env id> or calibration_data=<dataset folder>)")
    names = [i.name for i in make_session(model).get_inputs()]
    missing = sorted(set(names) - set(calibration[0]))
    if missing:
        raise ValueError(f"calibration samples lack the ONNX model's inputs {missing}; they have "
                         f"{sorted(calibration[0])}")

    class Reader(_Reader, CalibrationDataReader):
        pass

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(model), str(out), Reader(calibration, names), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types), per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out
