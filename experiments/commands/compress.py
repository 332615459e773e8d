"""Commands that make a saved policy smaller or faster, and weigh what it costs: compress, speed-success."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlagym.experiments.commands.args import COUNT, Command, Flag, add_config, env_ids, policy_name


@dataclass
class CompressConfig:
    """Settings of ``vlagym compress`` (``vlagym.policies.compress.compress_policy``)."""

    policy: str
    """The teacher: a vlagym policy folder or training run folder (its best). SB3 models are refused."""
    method: str
    """dynamic-int8, prune-l1, prune-ln, prune-channels, onnx, onnx-int8 (needs a calibration set) or distill
    (needs data)."""
    out: str
    """Folder for the compressed policy (config.json, model.safetensors, compression.json, ...)."""
    amount: float = 0.3
    """Pruning methods: the fraction of weights (prune-l1) or channels (prune-ln, prune-channels) removed."""
    calibration_env: str | None = None
    """Env id whose scripted expert is rolled on validation seeds for calibration observations (with the
    teacher's env kwargs); onnx-int8 quantizes on them, every method reports its agreement on them."""
    calibration_data: str | None = None
    """A dataset folder (vlagym collect's output) to take the calibration observations from instead."""
    calibration_episodes: int = 4
    """Calibration episodes."""
    calibration_steps: int = 40
    """Observations per calibration episode, at most."""
    threads: int = 1
    """ONNX Runtime threads for the agreement check."""
    data: list[str] = field(default_factory=list)
    """distill: dataset folders whose states the teacher labels for the student."""
    student: str | None = None
    """distill: the student's policy name (default: the teacher's, starting from its architecture)."""
    student_overrides: dict[str, Any] = field(default_factory=dict)
    """distill: student config fields, e.g. backbone_width=8 (half a width-16 BC-Z) or hidden_dim=128."""
    steps: int = 500
    """distill: training steps."""
    batch_size: int = 32
    """distill: samples per step."""
    lr: float = 3e-4
    """distill: peak learning rate."""
    distill_weight: float = 1.0
    """distill: the teacher's share of the loss; the dataset's labels get the rest."""
    temperature: float = 2.0
    """distill, RT-1 into RT-1 with the same bins: softmax temperature of the bin KL."""
    seed: int = 0
    """distill: seeds the student's weights and the data order."""
    device: str = "cpu"
    """distill: auto, cpu or cuda."""


def _compress_args(s) -> None:
    from vlagym.policies.compress import METHODS

    add_config(s, CompressConfig, flags={
        "method": Flag(choices=METHODS), "student": Flag(type=policy_name),
        "calibration_episodes": Flag(type=COUNT), "calibration_steps": Flag(type=COUNT), "steps": Flag(type=COUNT),
        "batch_size": Flag(type=COUNT), "threads": Flag(type=COUNT)})
    s.set_defaults(func=cmd_compress)


def cmd_compress(args) -> int:
    from vlagym.policies import load_policy
    from vlagym.policies.compress import compress_policy, read_record
    from vlagym.policies.compress.benchmark import count_parameters

    cfg = CompressConfig(**args.config_values)
    if cfg.calibration_env is not None:
        cfg.calibration_env = env_ids([cfg.calibration_env])[0]
    out = compress_policy(cfg.policy, cfg.method, cfg.out, amount=cfg.amount, calibration_env=cfg.calibration_env,
                          calibration_data=cfg.calibration_data, calibration_episodes=cfg.calibration_episodes,
                          calibration_steps=cfg.calibration_steps, threads=cfg.threads, data=cfg.data or None,
                          student=cfg.student, student_overrides=cfg.student_overrides, steps=cfg.steps,
                          batch_size=cfg.batch_size, lr=cfg.lr, distill_weight=cfg.distill_weight,
                          temperature=cfg.temperature, seed=cfg.seed, device=cfg.device, progress=True)
    record = read_record(out)
    results = record["results"]
    after = count_parameters(load_policy(out))
    print(f"{cfg.method}: {record['teacher']} -> {Path(out)}")
    print(f"parameters: {results['params_teacher']:,} -> {after:,} ({after / results['params_teacher']:.1%})")
    if "sparsity" in results:
        print(f"sparsity: {results['sparsity']:.1%}")
    agreement = results.get("agreement") or results.get("action_agreement")
    if agreement:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in agreement.items())
        print(f"agreement with the teacher: {shown}")
    else:
        print("agreement with the teacher: not measured (pass --calibration-env or --calibration-data)")
    print(f"provenance: {Path(out) / 'compression.json'}; evaluate with: vlagym eval --policy {out}")
    return 0


def _speed_success_args(s) -> None:
    from vlagym.experiments.speed_success import SpeedSuccessConfig

    add_config(s, SpeedSuccessConfig, flags={"evals": Flag(positional=True), "calls": Flag(type=COUNT),
                                            "episodes": Flag(type=COUNT), "steps": Flag(type=COUNT),
                                            "threads": Flag(type=COUNT)}, overrides=False)
    s.set_defaults(func=cmd_speed_success)


def cmd_speed_success(args) -> int:
    from vlagym.experiments.speed_success import SpeedSuccessConfig, speed_success, to_markdown, write

    rows = speed_success(SpeedSuccessConfig(**args.config_values))
    print(to_markdown(rows), end="")
    paths = write(rows, args.config_values["out"])
    print(f"wrote {paths['md']}, {paths['json']} and {paths['png']}")
    return 0


COMMANDS = [
    Command("compress", "compress a saved policy: int8, pruning, ONNX Runtime, or distillation into a student",
            "Write a smaller or faster copy of a vlagym policy (a folder or a training run) to --out, with "
            "compression.json (teacher, method, settings, parameters, agreement with the teacher); it loads, "
            "evaluates and records like any policy. distill trains a student (--student, --student-overrides) on "
            "the teacher's actions over --data; vlagym dagger --policy OUT/train continues it on the student's "
            "own states.", _compress_args),
    Command("speed-success", "time evaluated policies in one run: a table and a plot of Hz against success",
            "For each evaluation folder (vlagym eval --out), load the policy it evaluated, time its act at batch 1 "
            "on one thread on the same expert observations, and put the Hz beside the evaluation's success and "
            "95% interval: speed_success.md, .json and a plot (one curve per policy family, its Pareto front "
            "joined). Timing all of them in one process keeps the ratios comparable.", _speed_success_args),
]
