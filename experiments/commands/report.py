"""The report page: ``vlagym report RUN...`` (one run, or several compared side by side)."""

from __future__ import annotations

from dataclasses import dataclass

from vlagym.experiments.commands.args import Command, Flag, add_config


@dataclass
class ReportConfig:
    """Settings of ``vlagym report``."""

    runs: list[str]
    """Output folders (or their report.json) of vlagym eval, eval --suite or pipeline; several: a comparison."""
    labels: list[str] | None = None
    """A label per run (default: the folder names)."""
    out: str | None = None
    """The HTML file (default: report.html in the run's folder; several runs: compare.html here). Videos go,
    as WebM, into <name>_media/ beside it."""
    title: str | None = None
    """The page's title."""


def _report_args(s) -> None:
    add_config(s, ReportConfig, flags={"runs": Flag(positional=True)}, overrides=False)
    s.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from vlagym.experiments.html_report import write_html_report

    path = write_html_report(args.runs, args.out, labels=args.labels, title=args.title)
    print(f"report page: {path}")
    return 0


COMMANDS = [
    Command("report", "write an HTML page for runs (eval, suite, pipeline; several: compared)",
            "A static page: the summary table with 95% intervals, an interactive success chart (plotly.js inlined, "
            "works offline), every recorded video (WebM VP9) with its instruction and outcome, and the episodes "
            "with filters on outcome, level and task.", _report_args),
]
