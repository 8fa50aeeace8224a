"""The report's charts, written by hand as small inline SVGs.

Two simple charts do not need a plotting library: matplotlib cost ~0.5 s to import and ~0.35 s to draw them,
about a quarter of a 10-image annotate run. SVG is a vector format every browser renders inside ``<img>``; the
page stays one self-contained file. Every label (class names come from models and plug-ins) is sanitised and
escaped, so a hostile label cannot break the SVG; text sizes are approximated (no font metrics without a
renderer), which only sets the margins.
"""

from __future__ import annotations

import base64
import math
import re
import unicodedata
from html import escape
from typing import Sequence

import numpy as np

#: classes shown in the counts chart (the rest are summed into one "other" bar)
MAX_CLASSES = 20
ACCENT = "#3b6fb6"
MEDIAN = "#d2691e"
INK = "#333"
GRID = "#e3e3e3"
WIDTH = 640
FONT = 11
#: the widest label column of the counts chart (px); longer labels end with "…"
MAX_LABEL_PX = 220
ROW = 22

#: characters XML 1.0 forbids even when escaped (and lone surrogates, which UTF-8 cannot encode)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: object) -> str:
    """``value`` as XML character data or attribute text: forbidden characters replaced, markup escaped."""
    return escape(_NOT_XML.sub("\ufffd", str(value)), quote=True)


def _char_px(ch: str, size: float) -> float:
    """Approximate advance of ``ch`` in a sans-serif font: wide (CJK) glyphs ~1 em, others ~0.6 em."""
    return size * (1.0 if unicodedata.east_asian_width(ch) in "WF" else 0.6)


def _text_px(text: str, size: float = FONT) -> float:
    return sum(_char_px(ch, size) for ch in text)


def _fit(text: str, max_px: float, size: float = FONT) -> str:
    """``text`` cut to ``max_px`` wide, ending with "…" when it was cut."""
    if _text_px(text, size) <= max_px:
        return text
    room, used, kept = max_px - _char_px("…", size), 0.0, []
    for ch in text:
        used += _char_px(ch, size)
        if used > room:
            break
        kept.append(ch)
    return "".join(kept) + "…"


def _num(x: float) -> str:
    """A coordinate or tick value, short (no float noise like 0.30000000000000004)."""
    return f"{round(x, 6):g}"


def nice_step(span: float, target: int = 5) -> float:
    """The 1, 2 or 5 × 10^k step that cuts ``span`` into at most ~``target`` intervals."""
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10.0 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if mult * power >= raw - 1e-12 * power:
            return mult * power
    return 10 * power


def count_ticks(high: int) -> list[int]:
    """Integer ticks from 0 past ``high`` (the last one is the axis end): nice steps, never below 1."""
    step = max(1, int(round(nice_step(max(high, 1)))))
    return list(range(0, step * math.ceil(max(high, 1) / step) + 1, step))


def _svg(width: float, height: float, body: list[str]) -> str:
    """The data URI of an SVG document of ``width`` × ``height`` px holding ``body``."""
    doc = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" height="{_num(height)}" '
           f'viewBox="0 0 {_num(width)} {_num(height)}" font-family="sans-serif" font-size="{FONT}" '
           f'fill="{INK}"><rect width="100%" height="100%" fill="#fff"/>{"".join(body)}</svg>')
    return "data:image/svg+xml;base64," + base64.b64encode(doc.encode("utf-8")).decode("ascii")


def _label(x: float, y: float, text: str, anchor: str = "start", cls: str = "", **attrs: str) -> str:
    """A ``<text>`` centred vertically on ``y``; ``cls`` names its role (tick, value, label) for readers and tests."""
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items()) + (f' class="{cls}"' if cls else "")
    return (f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" dominant-baseline="middle"{extra}>'
            f"{_text(text)}</text>")


def _title(width: float, text: str) -> str:
    return _label(width / 2, 14, text, "middle", "title", font_size="13", font_weight="bold")


def class_counts_chart(counts: Sequence[tuple[str, int]]) -> str | None:
    """Horizontal bars, most frequent class on top; None when the run found no objects."""
    if not counts:
        return None
    shown = [(str(label), int(n)) for label, n in counts[:MAX_CLASSES]]
    rest = sum(int(n) for _, n in counts[MAX_CLASSES:])
    if rest:
        shown.append((f"other ({len(counts) - MAX_CLASSES} classes)", rest))
    ticks = count_ticks(max(n for _, n in shown))
    left = min(MAX_LABEL_PX, max(_text_px(label) for label, _ in shown)) + 12
    right = _text_px(str(ticks[-1])) + 16                      # room for the value label past the longest bar
    top, plot_h = 30, ROW * len(shown)
    plot_w = WIDTH - left - right
    height = top + plot_h + 44

    def x_of(n: float) -> float:
        return left + plot_w * n / ticks[-1]

    body = [_title(WIDTH, "objects per class")]
    for t in ticks:
        x = x_of(t)
        body.append(f'<line x1="{_num(x)}" y1="{top}" x2="{_num(x)}" y2="{top + plot_h}" stroke="{GRID}"/>')
        body.append(_label(x, top + plot_h + 12, str(t), "middle", "tick"))
    for i, (label, n) in enumerate(shown):
        y = top + ROW * i
        body.append(f'<rect class="bar" x="{_num(left)}" y="{y + 3}" width="{_num(x_of(n) - left)}" '
                    f'height="{ROW - 6}" fill="{ACCENT}"><title>{_text(label)}: {n}</title></rect>')
        body.append(_label(left - 6, y + ROW / 2, _fit(label, MAX_LABEL_PX), "end", "label"))
        body.append(_label(x_of(n) + 4, y + ROW / 2, str(n), cls="value", font_size="10"))
    body.append(f'<line x1="{_num(left)}" y1="{top}" x2="{_num(left)}" y2="{top + plot_h}" stroke="{INK}"/>')
    body.append(_label(left + plot_w / 2, height - 12, "objects", "middle", "axis"))
    return _svg(WIDTH, height, body)


def score_histogram(scores: np.ndarray, bins: int = 20) -> str | None:
    """Objects per score bin over [0, 1] (wider when a score falls outside); None when no object has a score."""
    if scores.size == 0:
        return None
    low = min(0.0, float(scores.min()))
    high = max(1.0, float(scores.max()))
    per_bin, edges = np.histogram(scores, bins=bins, range=(low, high))
    median = float(np.median(scores))
    height, left, right, top, bottom = 300, 52, 20, 30, 46
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    y_ticks = count_ticks(int(per_bin.max()))

    def x_of(v: float) -> float:
        return left + plot_w * (v - low) / (high - low)

    def y_of(n: float) -> float:
        return top + plot_h - plot_h * n / y_ticks[-1]

    body = [_title(WIDTH, f"score distribution ({scores.size} objects)")]
    for t in y_ticks:
        y = y_of(t)
        body.append(f'<line x1="{left}" y1="{_num(y)}" x2="{left + plot_w}" y2="{_num(y)}" stroke="{GRID}"/>')
        body.append(_label(left - 5, y, str(t), "end", "tick"))
    step = nice_step(high - low)
    for k in range(math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9) + 1):
        x = x_of(k * step)
        body.append(f'<line x1="{_num(x)}" y1="{top + plot_h}" x2="{_num(x)}" y2="{top + plot_h + 4}" '
                    f'stroke="{INK}"/>')
        body.append(_label(x, top + plot_h + 13, _num(k * step), "middle", "score-tick"))
    for n, a, b in zip(per_bin, edges[:-1], edges[1:]):
        x0, x1 = x_of(float(a)), x_of(float(b))
        body.append(f'<rect class="bar" x="{_num(x0)}" y="{_num(y_of(int(n)))}" width="{_num(x1 - x0)}" '
                    f'height="{_num(plot_h * int(n) / y_ticks[-1])}" fill="{ACCENT}" stroke="#fff" stroke-width="1">'
                    f"<title>{_num(float(a))}–{_num(float(b))}: {int(n)}</title></rect>")
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="{INK}"/>')
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{INK}"/>')
    mx = x_of(median)
    body.append(f'<line class="median" x1="{_num(mx)}" y1="{top}" x2="{_num(mx)}" y2="{top + plot_h}" '
                f'stroke="{MEDIAN}" stroke-width="1.5" stroke-dasharray="5 3"/>')
    legend_x, legend_y = left + plot_w - 100, 14             # legend, in the title's row: never over a bar
    body.append(f'<line x1="{legend_x}" y1="{legend_y}" x2="{legend_x + 18}" y2="{legend_y}" stroke="{MEDIAN}" '
                f'stroke-width="1.5" stroke-dasharray="5 3"/>')
    body.append(_label(legend_x + 23, legend_y, f"median {median:.2f}", cls="legend", font_size="10"))
    body.append(_label(left + plot_w / 2, height - 10, "score", "middle", "axis"))
    mid = _num(top + plot_h / 2)
    body.append(_label(14, top + plot_h / 2, "objects", "middle", "axis", transform=f"rotate(-90 14 {mid})"))
    return _svg(WIDTH, height, body)
