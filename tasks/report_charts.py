"""The report's charts, drawn by matplotlib (Agg, no display, no global pyplot state) as inline PNGs.

``Figure`` + ``FigureCanvasAgg`` instead of ``pyplot``: pyplot keeps global figures and picks a GUI
backend, neither of which a worker thread or a headless machine wants.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np

#: classes shown in the counts chart (the rest are summed into one "other" bar)
MAX_CLASSES = 20
ACCENT = "#3b6fb6"


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float, counts_on: str):
    """A figure with one axes whose ``counts_on`` axis ("x" or "y") counts objects: integer ticks only."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    getattr(ax, f"{counts_on}axis").set_major_locator(MaxNLocator(integer=True))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def class_counts_chart(counts: Sequence[tuple[str, int]]) -> str | None:
    """Horizontal bars, most frequent class on top; None when the run found no objects."""
    if not counts:
        return None
    shown = list(counts[:MAX_CLASSES])
    rest = sum(n for _, n in counts[MAX_CLASSES:])
    if rest:
        shown.append((f"other ({len(counts) - MAX_CLASSES} classes)", rest))
    labels = [str(label) for label, _ in shown][::-1]
    values = [n for _, n in shown][::-1]
    fig, ax = _figure(6.0, 0.6 + 0.28 * len(shown), "x")
    bars = ax.barh(labels, values, color=ACCENT)
    ax.bar_label(bars, padding=3, fontsize=8)
    ax.set_xlabel("objects")
    ax.set_title("objects per class")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def score_histogram(scores: np.ndarray, bins: int = 20) -> str | None:
    """Objects per score bin over [0, 1]; None when no object has a score."""
    if scores.size == 0:
        return None
    fig, ax = _figure(6.0, 2.8, "y")
    low = min(0.0, float(scores.min()))
    high = max(1.0, float(scores.max()))
    ax.hist(scores, bins=bins, range=(low, high), color=ACCENT, edgecolor="white")
    ax.axvline(float(np.median(scores)), color="#d2691e", linestyle="--", linewidth=1,
               label=f"median {np.median(scores):.2f}")
    ax.legend(frameon=False, fontsize=8)
    ax.set_xlabel("score")
    ax.set_ylabel("objects")
    ax.set_title(f"score distribution ({scores.size} objects)")
    return _png(fig)
