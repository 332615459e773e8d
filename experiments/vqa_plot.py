"""The per-family VQA plot of ``vlagym vqa-plot``: held-out accuracy of several runs beside the blind prior."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vlagym.experiments.report import save_figure


def plot_families(reports: dict[str, dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Accuracy per question family: one bar per report (legend label -> report), and the first report's blind
    prior, on held-out questions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(reports.values()))
    families = list(first["model"]["per_family"]) + ["overall"]
    bars = {label: r["model"] for label, r in reports.items()}
    if "blind" in first:
        bars["blind (question only)"] = first["blind"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(bars)
    for k, (label, res) in enumerate(bars.items()):
        ys = [100 * (res["accuracy"] if f == "overall" else res["per_family"].get(f, {}).get("accuracy", np.nan))
              for f in families]
        ax.bar(np.arange(len(families)) + (k - (len(bars) - 1) / 2) * width, ys, width, label=label,
               color="0.7" if label.startswith("blind") else None)
    ax.set_xticks(np.arange(len(families)), [f.replace("_", " ") for f in families], rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel("accuracy on held-out questions (%)")
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=len(bars), frameon=False)
    ax.set_title(title or "VQA accuracy per question family")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=120)


__all__ = ["plot_families"]
