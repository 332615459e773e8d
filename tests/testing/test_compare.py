"""Policy report comparison: Fisher's exact test on synthetic reports with known answers."""

from __future__ import annotations

import json

import pytest

from vlagym.experiments.cli import main
from vlagym.testing import ReportMismatch, compare_reports

A, B = "vlagym/TabletopTouch-v0", "vlagym/TabletopPickUp-v0"


def report(tasks: dict[str, tuple[int, int]], seed_start: int = 2_000_000, version: str = "0.1.0") -> dict:
    per_task = {env_id: {"episodes": n, "successes": s, "success_rate": s / n,
                         "seeds": list(range(seed_start, seed_start + n))} for env_id, (s, n) in tasks.items()}
    return {"provenance": {"vlagym_version": version, "git_revision": "abc"},
            "agents": {"policy": {"per_task": per_task}}}


def test_clear_drop_regresses_and_noise_does_not():
    result = compare_reports(report({A: (95, 100), B: (50, 100)}), report({A: (60, 100), B: (48, 100)}))
    assert result.regressed == [A]
    by_id = {t.env_id: t for t in result.tasks}
    assert by_id[A].p_value < 1e-6
    assert by_id[B].p_value > 0.3
    assert "REGRESSED" in result.table()


def test_improvement_is_not_a_regression():
    assert compare_reports(report({A: (10, 100)}), report({A: (90, 100)})).regressed == []


def test_different_episode_counts_on_shared_seed_prefix():
    result = compare_reports(report({A: (190, 200)}), report({A: (30, 50)}))
    assert result.regressed == [A]


def test_refusals():
    with pytest.raises(ReportMismatch, match="seeds differ"):
        compare_reports(report({A: (9, 10)}), report({A: (9, 10)}, seed_start=1_000_000))
    with pytest.raises(ReportMismatch, match="env ids differ"):
        compare_reports(report({A: (9, 10)}), report({B: (9, 10)}))
    with pytest.raises(ReportMismatch, match="versions differ"):
        compare_reports(report({A: (9, 10)}), report({A: (9, 10)}, version="0.2.0"))
    with pytest.raises(ReportMismatch, match="no agent 'expert'"):
        compare_reports(report({A: (9, 10)}), report({A: (9, 10)}), agent="expert")
    assert compare_reports(report({A: (9, 10)}), report({A: (9, 10)}, version="0.2.0"),
                           allow_version_mismatch=True).regressed == []


def test_cli_exit_codes(tmp_path, capsys):
    def write(name, rep):
        (tmp_path / name).write_text(json.dumps(rep))
        return str(tmp_path / name)

    base = write("base.json", report({A: (95, 100), B: (50, 100)}))
    worse = write("worse.json", report({A: (60, 100), B: (48, 100)}))
    same = write("same.json", report({A: (93, 100), B: (52, 100)}))
    other = write("other.json", report({A: (95, 100), B: (50, 100)}, seed_start=1_000_000))
    assert main(["regress", "compare", "--baseline", base, "--candidate", worse]) == 1
    out = capsys.readouterr().out
    assert f"regressed: {A}" in out and B not in out.split("regressed:")[1]
    assert main(["regress", "compare", "--baseline", base, "--candidate", same]) == 0
    assert main(["regress", "compare", "--baseline", base, "--candidate", other]) == 2
    assert "seeds differ" in capsys.readouterr().err
