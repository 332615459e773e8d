"""Compression by distillation: train a smaller student on a teacher's actions (``compress_policy(...,
method="distill")``), saved as a policy folder with its provenance.

The training is BC training with ``TrainConfig.teacher`` (``vlagym.policies.distill``) in ``out/train`` (a run
folder: rerunning resumes it, other settings are refused; ``vlagym dagger --policy out/train`` continues it on
the student's own states, the teacher relabelling them). Its final weights are copied to ``out`` beside
``compression.json``: teacher, method, the student's name, overrides and resolved config, the training
settings and data, and how far the student's actions are from the teacher's on real observations.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlagym.core.env_args import ENV_ARGS_NAME
from vlagym.policies.base import CONFIG_NAME, WEIGHTS_NAME, Policy, read_config

SPACE_FIELDS = ("type", "_vlagym_version", "stats", "image_size", "proprio_dim", "action_dim", "action_low",
                "action_high", "action_classes")
"""Teacher config fields a same-type student does not inherit: the env's spaces and the data's statistics set
them, as for any new policy."""


def student_overrides_for(teacher_config: dict[str, Any], student: str,
                          overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The student's config overrides: a student of the teacher's type starts from the teacher's architecture
    (so ``{"backbone_width": 8}`` alone halves a width-16 BC-Z); another type from its own defaults, reading the
    teacher's camera. ``overrides`` win."""
    if student == teacher_config.get("type"):
        base = {k: v for k, v in teacher_config.items() if k not in SPACE_FIELDS}
    else:
        base = {"image_key": teacher_config.get("image_key", "rgb")}
    return {**base, **(overrides or {})}


def distill_policy(teacher: str | Path, out: str | Path, *, data: list[str] | None, student: str | None = None,
                   student_overrides: dict[str, Any] | None = None, steps: int = 500, batch_size: int = 32,
                   lr: float = 3e-4, distill_weight: float = 1.0, temperature: float = 2.0, seed: int = 0,
                   device: str = "cpu", threads: int = 0, num_workers: int = 0,
                   calibration: list[list[dict[str, Any]]] | None = None, progress: bool = False) -> Path:
    """Distill the policy at ``teacher`` into a ``student`` (a registered policy name; default the teacher's
    type) trained for ``steps`` on the windows of ``data`` (dataset folders), written to ``out``.

    ``calibration`` (episodes of observations; default the first two demos of ``data``) is where the
    student's actions are compared with the teacher's."""
    from vlagym.policies.compress.api import check_teacher
    from vlagym.policies.compress.calibration import dataset_observations
    from vlagym.policies.compress.record import read_record, write_record
    from vlagym.policies.distill import load_teacher, soft_bins
    from vlagym.policies.factory import load_policy
    from vlagym.policies.train import TrainConfig, train

    src = check_teacher(teacher, purpose="distillation")
    if not data:
        raise ValueError("method 'distill' needs data: dataset folders (vlagym collect's output, from the teacher's "
                         "env) whose states the teacher labels for the student; pass data=[DIR, ...] (--data DIR)")
    data = [str(d) for d in ([data] if isinstance(data, str | Path) else data)]
    for d in data:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"distillation data {d} does not exist (expected a vlagym collect folder)")
    out = Path(out)
    if out.resolve() == src.resolve():
        raise ValueError(f"out {out} is the teacher's folder; write the student elsewhere")
    teacher_config = read_config(src / CONFIG_NAME)
    student = student or teacher_config["type"]
    overrides = student_overrides_for(teacher_config, student, student_overrides)
    run = out / "train"
    cfg = TrainConfig(data=data, policy=student, policy_overrides=overrides, out=str(run), steps=steps,
                      batch_size=batch_size, lr=lr, warmup_steps=min(100, steps // 10), eval_every=0,
                      save_every=max(steps // 4, 1), teacher=str(src.resolve()), distill_weight=distill_weight,
                      distill_temperature=temperature, seed=seed, device=device, threads=threads,
                      num_workers=num_workers)
    summary = train(cfg, resume=(run / "config.yaml").exists(), progress=progress)
    best = Path(summary["best_policy"])
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME, ENV_ARGS_NAME):
        if (best / name).exists():
            shutil.copyfile(best / name, out / name)

    reference, result = load_teacher(src), load_policy(best)
    episodes = calibration or dataset_observations(data[0], episodes=2, max_steps=40)
    record = read_record(src)
    settings = {"method": "distill", "student": student, "student_overrides": student_overrides or {},
                "student_config": result.config_dict(), "teacher_method": record["method"] if record else None,
                "data": data, "steps": steps, "batch_size": batch_size, "lr": lr, "distill_weight": distill_weight,
                "temperature": temperature, "soft_bins": soft_bins(reference, result), "seed": seed,
                "train_run": str(run)}
    results = {"params_teacher": reference.num_parameters(), "params_student": result.num_parameters(),
               "final_loss": summary["final_loss"],
               "action_agreement": action_agreement(reference, result, episodes,
                                                    "calibration" if calibration else f"first demos of {data[0]}")}
    write_record(out, "distill", src, settings, results)
    return out


@torch.no_grad()
def action_agreement(teacher: Policy, student: Policy, episodes: list[list[dict[str, Any]]],
                     source: str = "") -> dict[str, Any]:
    """Max and mean absolute difference of the two policies' actions (env units), each acting through
    ``episodes`` from a reset: the comparison that holds across architectures (raw step outputs of an RT-1
    and a BC-Z mean different things)."""
    diffs = []
    for observations in episodes:
        teacher.reset(), student.reset()
        for obs in observations:
            a = np.asarray(teacher.act(obs), dtype=np.float64)
            b = np.asarray(student.act(obs), dtype=np.float64)
            diffs.append(np.abs(a - b).reshape(-1))
    teacher.reset(), student.reset()
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    return {"max_abs_diff": float(d.max()) if d.size else None, "mean_abs_diff": float(d.mean()) if d.size else None,
            "steps": sum(len(e) for e in episodes), "on": source}
