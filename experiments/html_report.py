"""``vlagym report RUN...``: one static HTML page for an evaluation, a suite, a pipeline run, or several of them
side by side.

The page (``templates/report.html.j2``, jinja2) shows the summary table with 95% Wilson intervals, a plotly
chart of success with its intervals (plotly.js inlined, so the page works offline), every recorded video
(transcoded to WebM VP9, which Chromium builds decode without H.264, into ``<page>_media/`` beside the page)
captioned with its instruction and outcome, and the per-episode rows with filters on outcome, level and task.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from vlagym.core.io import atomic_write_text

TEMPLATES = Path(__file__).resolve().parent / "templates"
VIDEO_NAME = re.compile(r"^(?P<agent>.+?)_(?P<env>[A-Za-z0-9]+-v\d+)_(?:seed(?P<seed>\d+)|(?P<kind>grid|showcase))$")
"""The names ``vlagym eval --video`` and the pipeline give their videos: agent_Env-v0_seed123 / _grid / _showcase."""


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    """A run's ``report.json`` (given the file or its folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no report.json (pass an eval, suite or pipeline output folder)")
    try:
        report = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(report, dict) or not ("agents" in report or "cells" in report):
        raise ValueError(f"{p}: not a vlagym report (no 'agents' or 'cells')")
    return report


def kind_of(report: dict[str, Any]) -> str:
    if "cells" in report:
        return f"suite ({report.get('suite', '?')})"
    return "pipeline run" if report.get("job") == "pipeline" else "evaluation"


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _level(ep: dict[str, Any]) -> str:
    info = ep.get("info") or {}
    return str(info.get("level") or info.get("generalization_split") or "-")


def _summary_row(run: str, agent: str, task: str, condition: str, s: dict[str, Any]) -> dict[str, Any]:
    lo, hi = s["success_ci95"]
    return {"run": run, "agent": agent, "task": task.split("/")[-1], "condition": condition,
            "episodes": s["episodes"], "success": s["success_rate"], "lo": lo, "hi": hi,
            "steps": _fmt(s.get("mean_steps"), 1), "distance": _fmt(s.get("final_distance_mean"))}


def collect_run(label: str, report: dict[str, Any]) -> tuple[list[dict], list[dict], list[dict]]:
    """(summary rows, episode rows, videos) of one report."""
    rows, episodes, videos = [], [], []
    if "cells" in report:  # a suite: one row per (agent, task, level or perturbation)
        for c in report["cells"]:
            cond = c.get("level") or c.get("perturbation") or ""
            if c.get("strength") is not None:
                cond = f"{cond} {c['strength']:g}"
            rows.append(_summary_row(label, c["agent"], c["env_id"], cond or "-", c))
    blocks = dict(report.get("agents") or {})
    for agent, block in blocks.items():
        for task, s in block["per_task"].items():
            rows.append(_summary_row(label, agent, task, "test seeds", s))
        for ep in block.get("episodes", []):
            episodes.append({"run": label, "agent": agent, "task": ep["env_id"].split("/")[-1], "level": _level(ep),
                             "seed": ep["seed"], "instruction": ep["instruction"],
                             "outcome": "success" if ep["success"] else "failure", "steps": ep["steps"],
                             "distance": _fmt(ep.get("final_distance"))})
    showcase = (report.get("showcase") or {}).get("episodes", [])
    for path in report.get("videos", []):
        videos.append({"run": label, "path": Path(path), **_caption(Path(path), blocks, showcase)})
    return rows, episodes, videos


def _caption(path: Path, blocks: dict[str, Any], showcase: list[dict]) -> dict[str, Any]:
    m = VIDEO_NAME.match(path.stem)
    if not m:
        return {"agent": "-", "task": path.stem, "seed": None, "instruction": "", "outcome": "-", "outcome_class": ""}
    agent, env, kind = m["agent"], m["env"], m["kind"]
    eps = [e for e in (showcase if kind == "showcase" else blocks.get(agent, {}).get("episodes", []))
           if e["env_id"].endswith("/" + env)]
    if m["seed"] is not None:
        eps = [e for e in eps if e["seed"] == int(m["seed"])]
    out = {"agent": agent, "task": env, "seed": int(m["seed"]) if m["seed"] else None}
    if kind == "grid":
        return {**out, "instruction": f"the recorded episodes of {agent} on {env}, tiled", "outcome": "grid",
                "outcome_class": ""}
    if not eps:
        return {**out, "instruction": "", "outcome": "-", "outcome_class": ""}
    ok = eps[0]["success"]
    return {**out, "instruction": eps[0]["instruction"], "outcome": "success" if ok else "failure",
            "outcome_class": "success" if ok else "failure"}


def transcode_webm(src: Path, dst: Path) -> Path:
    """An MP4 (or GIF) as WebM VP9 (yuv420p, even sizes), written atomically; skipped when ``dst`` is newer."""
    import av
    import numpy as np

    from vlagym.dataio.staging import atomic_file

    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    if not frames:
        raise ValueError(f"{src}: no frames to transcode")
    h, w = frames[0].shape[:2]
    with atomic_file(dst) as tmp, av.open(str(tmp), "w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=10)
        stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        stream.options = {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        for i, frame in enumerate(frames):
            if frame.shape[:2] != (h, w):
                continue
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            out.mux(stream.encode(vf))
        out.mux(stream.encode())
    return dst


def success_plot(rows: list[dict[str, Any]], runs: int) -> str:
    """A grouped bar chart of success with asymmetric 95% intervals; its HTML with plotly.js inlined."""
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure()
    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(f"{r['run']}: {r['agent']}" if runs > 1 else r["agent"], []).append(r)
    for name, rs in series.items():
        fig.add_bar(name=name, x=[f"{r['task']} {r['condition']}" for r in rs], y=[r["success"] for r in rs],
                    error_y={"type": "data", "symmetric": False, "array": [r["hi"] - r["success"] for r in rs],
                             "arrayminus": [r["success"] - r["lo"] for r in rs]},
                    hovertemplate="%{x}: %{y:.1%}<extra>" + name + "</extra>")
    fig.update_layout(barmode="group", yaxis={"title": "success rate", "range": [0, 1.05], "tickformat": ".0%"},
                      height=420, margin={"t": 20, "b": 80}, legend={"orientation": "h"})
    return pio.to_html(fig, include_plotlyjs=True, full_html=False, config={"displaylogo": False},
                       div_id="success-plot")


def write_html_report(runs: list[str | os.PathLike], out: str | os.PathLike | None = None,
                      labels: list[str] | None = None, title: str | None = None) -> Path:
    """Write the page for the given run folders (or report.json files) and return its path. ``out`` defaults to
    ``report.html`` in the one run's folder (several runs: ``compare.html`` in the current folder)."""
    import jinja2

    if not runs:
        raise ValueError("report needs at least one run folder")
    labels = list(labels or [Path(r).name if Path(r).is_dir() else Path(r).parent.name for r in runs])
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    reports = [load_run(r) for r in runs]
    if out is None:
        first = Path(runs[0]) if Path(runs[0]).is_dir() else Path(runs[0]).parent
        out = first / "report.html" if len(runs) == 1 else Path("compare.html")
    out = Path(out)
    media = out.with_name(f"{out.stem}_media")
    rows, episodes, videos, meta = [], [], [], []
    for label, run, report in zip(labels, runs, reports):
        r, e, v = collect_run(label, report)
        rows += r
        episodes += e
        folder = Path(run) if Path(run).is_dir() else Path(run).parent
        for video in v:
            moved = folder / "videos" / video["path"].name  # a run folder copied elsewhere keeps its videos/
            if not video["path"].is_file() and moved.is_file():
                video["path"] = moved
            if not video["path"].is_file():
                raise FileNotFoundError(f"{run}: its report lists the video {video['path']}, which is missing")
            webm = transcode_webm(video["path"], media / f"{label}_{video['path'].stem}.webm")
            video["src"] = os.path.relpath(webm, out.parent)
        videos += v
        prov = report.get("provenance", {})
        meta.append({"label": label, "path": str(run), "kind": kind_of(report),
                     "version": prov.get("vlagym_version", "?"), "git": prov.get("git_revision", "?"),
                     "created": prov.get("created", "?")})
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    title = title or ("vlagym report: " + ", ".join(labels))
    html = env.get_template("report.html.j2").render(
        title=title, runs=meta, rows=rows, plot=success_plot(rows, len(runs)), videos=videos, episodes=episodes,
        levels=sorted({e["level"] for e in episodes}), tasks=sorted({e["task"] for e in episodes}))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, html)
    return out
