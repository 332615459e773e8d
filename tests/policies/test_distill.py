"""Distillation (vlagym.policies.distill, compress method "distill"): a tiny run lowers the student's loss
against its teacher, BC-Z into BC-Z and RT-1 into RT-1 (soft bins), windows carry what both policies read, a
resume refuses a changed teacher, and the compressed folder records its provenance and loads like any policy."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from vlagym.dataio.windows import DemoWindows
from vlagym.policies import load_policy
from vlagym.policies.compress import compress_policy, read_record
from vlagym.policies.distill import Distiller, bin_kl, teacher_targets, window_view
from vlagym.policies.train import TrainConfig, collate, train

BCZ_TEACHER = {"text_encoder": "hash", "text_dim": 16, "hidden_dim": 64, "horizon": 3, "backbone_width": 16,
               "pool": "spatial_softmax", "num_keypoints": 8, "output_stride": 16}
BCZ_STUDENT = {**BCZ_TEACHER, "hidden_dim": 32, "backbone_width": 8}
RT1_TEACHER = {"text_encoder": "hash", "text_dim": 16, "d_model": 64, "num_layers": 2, "num_heads": 4,
               "ff_dim": 128, "dropout": 0.0, "history": 2, "num_bins": 32}
RT1_STUDENT = {**RT1_TEACHER, "d_model": 32, "num_layers": 1, "ff_dim": 64, "history": 1}


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=[str(data)], out=str(out), steps=6, batch_size=4, num_workers=0, eval_every=0, save_every=3,
                log_every=3, warmup_steps=1, threads=1, device="cpu", augment=False)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def teachers(touch_data, tmp_path_factory):
    """A tiny BC-Z and a tiny RT-1 trained a few steps on the touch data (their stats are the data's)."""
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for name, overrides in (("bcz", BCZ_TEACHER), ("rt1", RT1_TEACHER)):
        train(_cfg(touch_data, root / name, policy=name, policy_overrides=overrides, steps=4), progress=False)
        out[name] = root / name
    return out


def held_batch(data, distiller: Distiller, horizon: int, n: int = 16) -> dict:
    windows = DemoWindows([str(data)], history=distiller.history(), horizon=horizon, augment=False,
                          image_keys=distiller.image_keys())
    step = max(len(windows) // n, 1)
    return collate([windows[i] for i in range(0, len(windows), step)][:n])


def distill_loss(student, distiller: Distiller, batch) -> float:
    student.eval()
    with torch.no_grad():
        return float(distiller.loss(student, batch)[0])


@pytest.mark.parametrize("kind,student_overrides,soft", [("bcz", BCZ_STUDENT, False), ("rt1", RT1_STUDENT, True)])
def test_a_tiny_distillation_lowers_the_students_loss_against_the_teacher(touch_data, teachers, tmp_path, kind,
                                                                          student_overrides, soft):
    # The starting student is saved, so its loss before and after is measured on the same weights' lineage.
    start = tmp_path / "start"
    train(_cfg(touch_data, start, policy=kind, policy_overrides=student_overrides, steps=1, lr=1e-9),
          progress=False)
    before_policy = load_policy(start / "best")
    distiller = Distiller.load(teachers[kind], before_policy)
    assert distiller.soft is soft
    batch = held_batch(touch_data, distiller, before_policy.config.horizon)
    before = distill_loss(before_policy, distiller, batch)
    summary = train(_cfg(touch_data, tmp_path / "student", policy=kind, init_from=str(start),
                         teacher=str(teachers[kind]), steps=40, lr=3e-3, warmup_steps=2), progress=False)
    after = distill_loss(load_policy(summary["best_policy"]), distiller, batch)
    assert after < 0.7 * before, (before, after)


def test_windows_carry_both_policies_cameras_and_history(touch_data, teachers):
    teacher = load_policy(teachers["rt1"] / "best")  # history 2
    student = load_policy(teachers["bcz"] / "best")  # history 1, horizon 3
    distiller = Distiller(teacher, student)
    assert distiller.history() == 2 and distiller.image_keys() == ("rgb",)
    assert not distiller.soft  # an RT-1 teacher and a BC-Z student share no bins: the actions are the target
    batch = held_batch(touch_data, distiller, horizon=3, n=4)
    assert batch["rgb"].shape[1] == 2
    view = window_view(batch, 1, ("rgb",))
    assert view["rgb"].shape[1] == 1 and view["proprio"].shape[1] == 1 and view["obs_mask"].shape[1] == 1
    torch.testing.assert_close(view["rgb"], batch["rgb"][:, -1:])
    actions, mask = teacher_targets(teacher, window_view(batch, 2, ("rgb",)), horizon=3)
    assert actions.shape == (4, 3, 5) and mask.tolist() == [[True, False, False]] * 4  # RT-1 plans one step
    torch.testing.assert_close(actions[:, 0], teacher.predict(window_view(batch, 2, ("rgb",)))[:, 0])
    loss, logs = distiller.loss(student, batch)
    assert torch.isfinite(loss) and logs["distill_loss"] == pytest.approx(float(loss.detach()))


def test_bin_kl_is_zero_on_the_teachers_logits_and_scales_with_t_squared():
    logits = torch.randn(3, 5, 32)
    assert float(bin_kl(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(3, 5, 32)
    p = torch.softmax(logits, -1)
    direct = (p * (torch.log_softmax(logits, -1) - torch.log_softmax(other, -1))).sum(-1).mean()
    assert float(bin_kl(other, logits, 1.0)) == pytest.approx(float(direct), rel=1e-5)


def test_mixing_with_the_data_labels(touch_data, teachers):
    student = load_policy(teachers["bcz"] / "best").train()
    teacher = load_policy(teachers["bcz"] / "best")
    mixed, alone = Distiller(teacher, student, weight=0.25), Distiller(teacher, student)
    batch = held_batch(touch_data, mixed, horizon=3, n=4)
    torch.manual_seed(0)
    loss, logs = mixed.loss(student, batch)
    bc, _ = student.loss(batch)
    term, _ = alone.loss(student, batch)
    assert float(loss.detach()) == pytest.approx(0.25 * float(term.detach()) + 0.75 * float(bc.detach()), rel=1e-5)
    assert "data_loss" in logs and "teacher_loss" in logs
    with pytest.raises(ValueError, match="distill_weight must lie in"):
        Distiller(teacher, student, weight=1.5)
    with pytest.raises(ValueError, match="distill_temperature must be > 0"):
        TrainConfig(distill_temperature=0.0)


def test_resume_refuses_a_changed_teacher(touch_data, teachers, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(touch_data, out, policy="bcz", policy_overrides=BCZ_STUDENT, teacher=str(teachers["bcz"]), steps=3)
    train(cfg, progress=False)
    changed = _cfg(touch_data, out, policy="bcz", policy_overrides=BCZ_STUDENT, teacher=str(teachers["rt1"]), steps=3)
    with pytest.raises(ValueError, match="teacher: .* in the run"):
        train(changed, resume=True, progress=False)
    train(_cfg(touch_data, out, policy="bcz", policy_overrides=BCZ_STUDENT, teacher=str(teachers["bcz"]), steps=3),
          resume=True, progress=False)  # the same teacher resumes (the run is finished: nothing to do)


def test_bad_teachers_are_refused_by_name(touch_data, teachers, tmp_path):
    zip_path = tmp_path / "ppo.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        z.writestr("data", "{}")
    student = load_policy(teachers["bcz"] / "best")
    with pytest.raises(ValueError, match="stable-baselines3 model; distillation works on a vlagym policy"):
        Distiller.load(zip_path, student)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(_cfg(touch_data, tmp_path / "r", policy="bcz", teacher=str(tmp_path / "nowhere")), progress=False)
    assert not (tmp_path / "r" / "config.yaml").exists()  # refused before the run's config is written
    other = load_policy(teachers["bcz"] / "best")
    other.config.proprio_dim = 9
    with pytest.raises(ValueError, match="act in different envs .*proprio_dim: teacher 9, student 6"):
        Distiller(other, student)


def test_compress_distill_writes_provenance_and_loads(touch_data, teachers, tmp_path):
    out = compress_policy(teachers["bcz"], "distill", tmp_path / "small", data=[str(touch_data)],
                          student_overrides={"backbone_width": 8}, steps=4, batch_size=4, temperature=3.0)
    record = read_record(out)
    assert record["method"] == "distill" and record["teacher"] == str((teachers["bcz"] / "best").resolve())
    s = record["settings"]
    assert s["student"] == "bcz" and s["student_overrides"] == {"backbone_width": 8} and s["steps"] == 4
    assert s["temperature"] == 3.0 and s["data"] == [str(touch_data)] and s["soft_bins"] is False
    assert s["student_config"]["backbone_width"] == 8 and s["student_config"]["hidden_dim"] == 64  # teacher's
    r = record["results"]
    assert r["params_student"] < r["params_teacher"] and r["action_agreement"]["steps"] > 0
    policy = load_policy(out)
    assert policy.config.backbone_width == 8 and policy.num_parameters() == r["params_student"]
    assert json.loads((out / "env_args.json").read_text())["env_name"] == "vlagym/TabletopTouch-v0"
    with pytest.raises(ValueError, match="method 'distill' needs data"):
        compress_policy(teachers["bcz"], "distill", tmp_path / "nodata")
    with pytest.raises(ValueError, match="unknown compression method 'distil'"):
        compress_policy(teachers["bcz"], "distil", tmp_path / "typo")
