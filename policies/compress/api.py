"""Compress a saved policy into a new folder, and load any compressed folder back.

``compress_policy(teacher_dir, method, out)`` with ``method`` one of ``METHODS``:

=================  ====================================================================================
``dynamic-int8``   torch dynamic int8 of the per-step Linear layers (float weights saved; re-quantized on
                   load, a deterministic function of them)
``prune-l1``       L1 unstructured masks on per-step Conv2d/Linear weights (zeros; shapes unchanged)
``prune-ln``       L``n`` structured masks on per-step Conv2d output channels (zeros; shapes unchanged)
``prune-channels`` torch-pruning channel removal in the FiLM conv backbones (smaller weights and compute)
``onnx``           the step network exported to ONNX, run by ONNX Runtime (float)
``onnx-int8``      the same, statically quantized to int8 (QDQ) on a calibration set of real observations
``distill``        a smaller student trained on the teacher's actions over a dataset (``compress/distill.py``)
=================  ====================================================================================

Every output folder holds ``config.json`` + ``model.safetensors`` (so it loads and evaluates like any other
policy), ``compression.json`` (provenance), the teacher's ``env_args.json`` (so ``vlagym eval --policy
DIR`` builds the same env), and ``structure.json`` / ``step.onnx`` where the method needs them.
``load_compressed(dir)`` (which ``vlagym.policies.load_policy`` calls when ``compression.json`` is there)
rebuilds each kind.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlagym.core.env_args import ENV_ARGS_NAME
from vlagym.policies.base import CONFIG_NAME, WEIGHTS_NAME, Policy, read_config
from vlagym.policies.compress.record import (
    COMPRESSION_NAME,
    ONNX_NAME,
    STRUCTURE_NAME,
    read_record,
    write_record,
)

METHODS = ("dynamic-int8", "prune-l1", "prune-ln", "prune-channels", "onnx", "onnx-int8", "distill")
TORCH_METHODS = ("dynamic-int8", "prune-l1", "prune-ln", "prune-channels")
ONNX_METHODS = ("onnx", "onnx-int8")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown compression method {method!r}; choose one of {list(METHODS)}")
    return method


def check_teacher(path: str | Path, purpose: str = "compression") -> Path:
    """The vlagym policy folder at ``path``; an SB3 model (a zip, or an RL run folder holding
    ``model.zip``) or a folder without ``config.json`` is refused, naming what it is (and that ``purpose``
    needs a vlagym policy)."""
    p = Path(path)
    zips = [p] if p.suffix == ".zip" else [p / "model.zip"]
    if any(z.is_file() and zipfile.is_zipfile(z) for z in zips) and not (p / CONFIG_NAME).exists():
        raise ValueError(f"{p} is a stable-baselines3 model; {purpose} works on a vlagym policy folder "
                         f"(config.json + model.safetensors, from vlagym train)")
    if not p.is_dir():
        raise FileNotFoundError(f"policy folder {p} does not exist")
    for sub in ("", "best", "checkpoint/policy"):  # a training run folder: its best checkpoint
        if (p / sub / CONFIG_NAME).exists():
            return p / sub if sub else p
    raise FileNotFoundError(f"no vlagym policy at {p} (expected {CONFIG_NAME} and {WEIGHTS_NAME})")


def compress_policy(teacher: str | Path, method: str, out: str | Path, *, amount: float = 0.3,
                    calibration: list[list[dict[str, Any]]] | None = None, calibration_env: str | None = None,
                    calibration_data: str | Path | None = None, calibration_episodes: int = 4,
                    calibration_steps: int = 40, op_types: tuple[str, ...] = ("Conv",), threads: int = 1,
                    data: list[str] | None = None, student: str | None = None,
                    student_overrides: dict[str, Any] | None = None, steps: int = 500, batch_size: int = 32,
                    lr: float = 3e-4, distill_weight: float = 1.0, temperature: float = 2.0, seed: int = 0,
                    device: str = "cpu", progress: bool = False) -> Path:
    """Compress the policy saved at ``teacher`` with ``method`` into ``out``; returns ``out``.

    Args:
        amount: fraction pruned (pruning methods).
        calibration: episodes of real observations for ``onnx-int8``; or ``calibration_env`` (an env id whose
            expert is rolled on validation seeds, with the teacher's env kwargs) or ``calibration_data`` (a
            dataset folder), ``calibration_episodes`` x at most ``calibration_steps`` observations. Also used,
            when given, to measure every method's agreement with the teacher.
        op_types: ONNX operators ``onnx-int8`` quantizes (the convolutions by default).
        threads: ONNX Runtime threads for the agreement check.
        data, student, student_overrides, steps, batch_size, lr, distill_weight, temperature, seed, device:
            ``distill`` (``vlagym.policies.compress.distill.distill_policy``): the student (default: the
            teacher's type and architecture, changed by ``student_overrides``) trains on ``data``.
    """
    from vlagym.policies.compress.calibration import (
        dataset_observations,
        rollout_observations,
        step_inputs_from,
        teacher_env_kwargs,
    )
    from vlagym.policies.factory import load_policy

    check_method(method)
    if method == "distill":
        from vlagym.policies.compress.distill import distill_policy

        if calibration is None and calibration_env is not None:
            calibration = rollout_observations(calibration_env, calibration_episodes, max_steps=calibration_steps,
                                               env_kwargs=teacher_env_kwargs(check_teacher(teacher)))
        elif calibration is None and calibration_data is not None:
            calibration = dataset_observations(calibration_data, calibration_episodes, calibration_steps)
        return distill_policy(teacher, out, data=data, student=student, student_overrides=student_overrides,
                              steps=steps, batch_size=batch_size, lr=lr, distill_weight=distill_weight,
                              temperature=temperature, seed=seed, device=device, calibration=calibration,
                              progress=progress)
    src = check_teacher(teacher)
    record = read_record(src)
    if record is not None and record["method"] in ("dynamic-int8", *ONNX_METHODS):
        raise ValueError(f"{src} is already compressed ({record['method']}); compress its float teacher "
                         f"{record.get('teacher')} instead")
    out = Path(out)
    if out.resolve() == src.resolve():
        raise ValueError(f"out {out} is the teacher's folder; write the compressed policy elsewhere")
    policy = load_policy(src).eval()
    if type(policy).step_module is Policy.step_module:
        raise ValueError(f"{src}: {type(policy).__name__} ({policy.name!r}) defines no step_module(); compression "
                         "works on a policy's per-step network (step_module, step_inputs, finish_step: "
                         "docs/adding-a-policy.md)")
    if calibration is None and calibration_env is not None:
        calibration = rollout_observations(calibration_env, calibration_episodes, max_steps=calibration_steps,
                                           env_kwargs=teacher_env_kwargs(src))
    elif calibration is None and calibration_data is not None:
        calibration = dataset_observations(calibration_data, calibration_episodes, calibration_steps)
    probe = step_inputs_from(policy, calibration) if calibration else []
    if method == "onnx-int8" and not probe:
        raise ValueError("method 'onnx-int8' needs a calibration set of real observations: pass calibration_env="
                         "<env id> or calibration_data=<dataset folder> (vlagym collect's output)")
    settings: dict[str, Any] = {"method": method}
    results: dict[str, Any] = {"params_teacher": policy.num_parameters()}
    out.mkdir(parents=True, exist_ok=True)
    student: Policy | None = None
    if method == "dynamic-int8":
        from vlagym.policies.compress.quantize import quantize_dynamic_int8

        student = quantize_dynamic_int8(policy)
        settings.update(modules=student.__dict__["quantized_modules"], dtype="qint8",
                        engine=torch.backends.quantized.engine)
        policy.save_pretrained(out)  # float weights: dynamic quantization is redone from them on load
    elif method in ("prune-l1", "prune-ln", "prune-channels"):
        from vlagym.policies.compress import prune

        settings["amount"] = amount
        if method == "prune-l1":
            student, report = prune.prune_l1_unstructured(policy, amount)
        elif method == "prune-ln":
            student, report = prune.prune_ln_structured(policy, amount)
            settings["n"] = 1
        else:
            student, report = prune.prune_channels(policy, amount)
            structure = report.pop("structure")
            _write_json(out / STRUCTURE_NAME, {"format": 1, "modules": structure})
        results.update(report)
        student.save_pretrained(out)
    else:
        from vlagym.policies.compress.onnx_backend import OnnxPolicy, export_onnx
        from vlagym.policies.compress.quantize import quantize_onnx_static

        policy.save_pretrained(out)  # bookkeeping, instruction encoder and decoding stay in torch
        if (src / STRUCTURE_NAME).exists():
            shutil.copyfile(src / STRUCTURE_NAME, out / STRUCTURE_NAME)
        float_path = export_onnx(policy, out / ONNX_NAME)
        if method == "onnx-int8":
            tmp = out / "step.float.onnx"
            float_path.replace(tmp)
            quantize_onnx_static(tmp, out / ONNX_NAME, probe, op_types)
            tmp.unlink()
            settings.update(op_types=list(op_types), quant_format="QDQ", activations="uint8", weights="int8",
                            per_channel=True, calibrate_method="MinMax", calibration_samples=len(probe),
                            calibration_env=calibration_env,
                            calibration_data=str(calibration_data) if calibration_data else None)
        settings["opset"] = 18
        student = OnnxPolicy(load_policy(src).eval(), out / ONNX_NAME, threads)  # its own torch copy
    if (src / ENV_ARGS_NAME).exists():
        shutil.copyfile(src / ENV_ARGS_NAME, out / ENV_ARGS_NAME)
    if probe:
        results["agreement"] = agreement(policy, student, probe)
    write_record(out, method, src, settings, results)
    return out


def _write_json(path: Path, data: Any) -> None:
    import json

    from vlagym.core.io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


@torch.no_grad()
def agreement(teacher: Policy, student, samples: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """How far the student's raw step output (normalized action, or RT-1 logits) is from the teacher's on
    recorded step inputs: max and mean absolute difference over ``samples``."""
    inner = getattr(student, "policy", student)
    diffs = []
    for s in samples:
        inputs = {k: torch.from_numpy(v) for k, v in s.items()}
        a = teacher.run_step(inputs)[0]
        b = inner.run_step(inputs)[0]
        diffs.append((a.float() - b.float()).abs())
    d = torch.cat([x.flatten() for x in diffs])
    return {"raw_max_abs_diff": float(d.max()), "raw_mean_abs_diff": float(d.mean()), "samples": len(samples)}


def load_compressed(directory: str | Path, device: str | torch.device = "cpu", threads: int = 1):
    """Load a folder written by ``compress_policy``: a ``Policy`` for the torch methods, an ``OnnxPolicy``
    for the ONNX ones."""
    from vlagym.policies.registry import policy_class

    directory = Path(directory)
    record = read_record(directory)
    if record is None:
        raise FileNotFoundError(f"{directory / COMPRESSION_NAME} not found; {directory} is not a compressed policy")
    method = check_method(record["method"])
    kind = read_config(directory / CONFIG_NAME).get("type")
    try:
        cls = policy_class(kind)
    except ValueError as e:
        raise ValueError(f"{directory / CONFIG_NAME}: 'type' is {kind!r}: {e}") from e
    if (directory / STRUCTURE_NAME).exists():
        policy = _load_pruned(cls, directory, device)
    else:
        policy = cls.from_pretrained(directory, device=device)
    if method == "dynamic-int8":
        from vlagym.policies.compress.quantize import quantize_dynamic_int8

        if torch.device(device).type != "cpu":
            raise ValueError(f"{directory}: dynamic int8 runs on the CPU (fbgemm/x86 kernels), not on {device}")
        return quantize_dynamic_int8(policy, record["settings"]["modules"])
    if method in ONNX_METHODS:
        from vlagym.policies.compress.onnx_backend import OnnxPolicy

        if torch.device(device).type != "cpu":
            raise ValueError(f"{directory}: the ONNX Runtime backend runs on the CPU here, not on {device}")
        return OnnxPolicy(policy, directory / ONNX_NAME, threads)
    return policy


def _load_pruned(cls: type[Policy], directory: Path, device: str | torch.device) -> Policy:
    """Build the architecture from config.json, resize the layers structure.json names, load the weights."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from vlagym.policies.compress.prune import apply_structure

    path = directory / STRUCTURE_NAME
    try:
        modules = json.loads(path.read_text())["modules"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected an object with a 'modules' object ({e})") from e
    config = cls.config_class.from_dict(read_config(directory / CONFIG_NAME))
    policy = apply_structure(cls(config, load_pretrained=False), modules)
    weights = directory / WEIGHTS_NAME
    try:
        load_model(policy, str(weights), strict=True, device=str(device))
    except (SafetensorError, FileNotFoundError) as e:
        raise ValueError(f"{weights}: cannot read the weights ({e})") from e
    except RuntimeError as e:
        raise ValueError(f"{weights} does not fit {path}: {e}") from e
    policy.__dict__["structure"] = modules
    return policy.to(device).eval()


def load_any(directory: str | Path, device: str | torch.device = "cpu", threads: int = 1):
    """Any saved vlagym policy, compressed or not (``load_policy`` does the same with one thread)."""
    if read_record(directory) is not None:
        return load_compressed(directory, device, threads)
    from vlagym.policies.factory import load_policy

    return load_policy(directory, device)
