"""``vlagym report``: the page for an evaluation (and beside it a suite, as a comparison) holds the summary with
intervals, the plot, every video and every episode; a real headless Chromium loads it with no console errors,
decodes every video and renders a page that is not blank."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlagym.experiments.browser import CHROMIUM, VIDEO_WIDTHS, Page
from vlagym.experiments.cli import main
from vlagym.experiments.html_report import collect_run, load_run

CHECKPOINT = Path(__file__).resolve().parents[2] / "assets" / "checkpoints" / "bcz_pickup_tiny"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """A real evaluation with videos (the shipped BC-Z beside the expert, 3 test seeds, 2 recorded each) and a
    real two-level generalization suite of the expert."""
    root = tmp_path_factory.mktemp("report")
    ev, suite = root / "eval", root / "suite"
    assert main(["eval", "--policy", str(CHECKPOINT), "--env", "vlagym/TabletopPickUp-v0", "--episodes", "3",
                 "--workers", "1", "--video", str(ev / "videos"), "--videos", "2", "--out", str(ev)]) == 0
    from vlagym.experiments.suites import run_suite

    run_suite("generalization", None, ["vlagym/TabletopTouch-v0"], episodes=1, workers=1, out=str(suite),
              levels=["L1", "L2"])
    return ev, suite


def test_the_page_holds_every_row_video_and_episode(runs, capsys):
    ev, suite = runs
    assert main(["report", str(ev)]) == 0
    page = ev / "report.html"
    assert f"report page: {page}" in capsys.readouterr().out
    html = page.read_text()
    report = load_run(ev)
    videos = sorted((ev / "report_media").glob("*.webm"))
    assert len(videos) == len(report["videos"]) == 6  # 2 episodes + a grid, per agent
    for v in videos:
        assert f'src="report_media/{v.name}"' in html and v.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML: WebM
    for block in report["agents"].values():
        for ep in block["episodes"]:
            assert ep["instruction"] in html
        lo, hi = block["overall"]["success_ci95"]
        assert f"[{100 * lo:.1f}%, {100 * hi:.1f}%]" in html
    assert html.count('data-success="') == 6 and "Plotly.newPlot" in html
    assert "cdn.plot.ly" not in html.split("Plotly.newPlot")[0][-2000:] and len(html) > 3_000_000  # JS inlined
    rows, episodes, captions = collect_run("eval", report)
    recorded = {(c["agent"], c["seed"]): c for c in captions if c["seed"] is not None}
    for agent, block in report["agents"].items():
        for ep in block["episodes"][:2]:
            c = recorded[(agent, ep["seed"])]
            assert (c["instruction"], c["outcome"]) == (ep["instruction"], "success" if ep["success"] else "failure")

    assert main(["report", str(ev), str(suite), "--labels", "bcz", "suite", "--out", str(ev.parent / "cmp.html")]) == 0
    both = (ev.parent / "cmp.html").read_text()
    suite_cells = json.loads((suite / "report.json").read_text())["cells"]
    assert all(f"<td>{c['level']}</td>" in both for c in suite_cells) and "<td>suite</td>" in both


def test_bad_runs_are_refused_naming_the_path(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path}: no report.json" in capsys.readouterr().err
    (tmp_path / "report.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    assert "not a vlagym report" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here; README's test command installs Debian's package")
def test_chromium_loads_the_page_plays_every_video_and_renders_it(runs):
    ev, _ = runs
    page = ev / "report.html"
    if not page.exists():
        assert main(["report", str(ev)]) == 0
    with Page() as tab:
        tab.open(page)
        widths = tab.evaluate(VIDEO_WIDTHS)
        assert tab.evaluate("document.querySelectorAll('#success-plot .main-svg').length") >= 1  # plotly drew
        tab.evaluate("document.getElementById('f-success').value = 'failure';"
                     "document.getElementById('f-success').dispatchEvent(new Event('change'))")
        shown = tab.evaluate("Array.from(document.querySelectorAll('#episodes tbody tr'))"
                             ".filter(r => r.style.display !== 'none').map(r => r.dataset.success)")
        png = tab.screenshot()
        errors = list(tab.errors)
    assert errors == []
    assert len(widths) == 6 and all(w["error"] is None and w["width"] > 0 for w in widths), widths
    assert set(shown) <= {"failure"} and len(shown) == sum(
        not e["success"] for b in load_run(ev)["agents"].values() for e in b["episodes"])
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float64)
    assert img.shape[0] > 500 and img.shape[1] > 500
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50, "the screenshot is blank"
    (ev / "screenshot.png").write_bytes(png)
