"""The report's hand-written SVG charts, read back as XML: well-formed whatever the labels, bars as long as the
counts they stand for, the histogram's bins and median where the scores put them. (``tests/test_report.py``
checks that Chromium decodes them in a real report page.)"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from pxflow.tasks.report_charts import MAX_CLASSES, class_counts_chart, count_ticks, score_histogram

NS = "{http://www.w3.org/2000/svg}"
PREFIX = "data:image/svg+xml;base64,"


def _svg(uri: str | None) -> ET.Element:
    assert uri is not None and uri.startswith(PREFIX), (uri or "")[:40]
    return ET.fromstring(base64.b64decode(uri[len(PREFIX):]))


def _bars(root: ET.Element) -> list[dict[str, float]]:
    return [{k: float(r.get(k)) for k in ("x", "y", "width", "height")}
            for r in root.iter(f"{NS}rect") if r.get("class") == "bar"]


def _texts(root: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for t in root.iter(f"{NS}text") if t.get("class") == cls]


def _median_x(root: ET.Element) -> float:
    (line,) = [ln for ln in root.iter(f"{NS}line") if ln.get("class") == "median"]
    assert line.get("x1") == line.get("x2") and line.get("stroke-dasharray")
    return float(line.get("x1"))


@pytest.mark.parametrize("uri", [
    class_counts_chart([("person", 3)]),
    score_histogram(np.array([0.5], dtype=np.float32)),
])
def test_a_chart_is_a_sized_svg_with_a_viewbox_and_a_generic_font(uri):
    root = _svg(uri)
    assert root.tag == f"{NS}svg"
    width, height = float(root.get("width")), float(root.get("height"))
    assert width >= 300 and height > 0
    assert root.get("viewBox").split() == ["0", "0", root.get("width"), root.get("height")]
    assert root.get("font-family") == "sans-serif"


def test_empty_input_draws_no_chart():
    assert class_counts_chart([]) is None
    assert score_histogram(np.array([], dtype=np.float32)) is None


def test_bars_are_proportional_to_the_counts_largest_on_top_with_their_labels():
    root = _svg(class_counts_chart([("car", 40), ("dog", 20), ("cat", 10)]))
    bars = _bars(root)
    assert len(bars) == 3
    assert bars[0]["width"] / bars[2]["width"] == pytest.approx(4, rel=1e-3)
    assert bars[1]["width"] / bars[2]["width"] == pytest.approx(2, rel=1e-3)
    assert bars[0]["y"] < bars[1]["y"] < bars[2]["y"]                 # car (40) on top
    assert len({b["x"] for b in bars}) == 1                            # one baseline
    assert _texts(root, "label") == ["car", "dog", "cat"]
    assert _texts(root, "value") == ["40", "20", "10"]
    assert "objects per class" in _texts(root, "title") and _texts(root, "axis") == ["objects"]


def test_classes_beyond_max_are_folded_into_one_other_bar_with_their_sum():
    head = [(f"c{i}", 100 - i) for i in range(MAX_CLASSES)]
    tail = [("t1", 7), ("t2", 5), ("t3", 2), ("t4", 1)]
    root = _svg(class_counts_chart(head + tail))
    bars = _bars(root)
    assert len(bars) == MAX_CLASSES + 1
    assert _texts(root, "label")[-1] == "other (4 classes)"
    assert _texts(root, "value")[-1] == "15"
    assert bars[-1]["width"] / bars[0]["width"] == pytest.approx(15 / 100, rel=1e-3)
    assert "t1" not in _texts(root, "label")


def test_count_ticks_are_round_integers_ending_at_or_past_the_largest_count():
    assert count_ticks(1) == [0, 1]
    assert count_ticks(7) == [0, 2, 4, 6, 8]
    assert count_ticks(40) == [0, 10, 20, 30, 40]
    assert count_ticks(401) == [0, 100, 200, 300, 400, 500]
    assert count_ticks(23) == [0, 5, 10, 15, 20, 25]
    root = _svg(class_counts_chart([("a", 3)]))
    assert _texts(root, "tick") == ["0", "1", "2", "3"]                  # never a 0.5 tick for counts


def test_a_hostile_or_long_label_keeps_the_svg_well_formed_and_the_margin_capped():
    hostile = '<b>&"\'</svg>\x01'
    long = "x" * 300
    root = _svg(class_counts_chart([(hostile, 5), (long, 2)]))        # ET.fromstring: well-formed
    labels = _texts(root, "label")
    assert labels[0] == '<b>&"\'</svg>\ufffd'                            # the text shown, not markup
    assert labels[1].endswith("…") and len(labels[1]) < 60
    titles = [t.text for r in root.iter(f"{NS}rect") for t in r.iter(f"{NS}title")]
    assert titles[1] == f"{long}: 2"                                     # the full label on hover
    short = _bars(_svg(class_counts_chart([("ab", 5)])))[0]["x"]
    capped = _bars(root)[0]["x"]
    assert short < capped < float(root.get("width")) / 2                # sized from the longest label, capped


def test_histogram_has_one_bar_per_bin_and_only_the_filled_bin_is_drawn():
    root = _svg(score_histogram(np.full(7, 0.42, dtype=np.float32), bins=20))   # 0.42 is in [0.40, 0.45): bin 8
    bars = _bars(root)
    assert len(bars) == 20
    assert [i for i, b in enumerate(bars) if b["height"] > 0] == [8]
    widths = {round(b["width"], 3) for b in bars}
    assert len(widths) == 1 and all(a["x"] < b["x"] for a, b in zip(bars, bars[1:]))
    assert _texts(root, "axis") == ["score", "objects"]
    assert _texts(root, "title") == ["score distribution (7 objects)"]


def test_histogram_heights_follow_the_counts_and_the_range_widens_past_0_and_1():
    # 4 bins over [-0.5, 1.5]: [-0.5, 0) gets 1, [0, 0.5) gets 3, [0.5, 1) none, [1, 1.5] gets 2
    scores = np.array([-0.5, 0.1, 0.2, 0.3, 1.2, 1.5], dtype=np.float32)
    bars = _bars(_svg(score_histogram(scores, bins=4)))
    assert len(bars) == 4
    assert [b["height"] / bars[0]["height"] for b in bars] == pytest.approx([1, 3, 0, 2], rel=1e-3)
    bottoms = {round(b["y"] + b["height"], 3) for b in bars}
    assert len(bottoms) == 1                                            # all standing on the x axis


def test_median_line_is_at_the_median_score_with_its_label():
    scores = np.array([0.1, 0.2, 0.9], dtype=np.float32)              # median 0.2, range [0, 1]
    root = _svg(score_histogram(scores, bins=10))
    bars = _bars(root)
    left, right = bars[0]["x"], bars[-1]["x"] + bars[-1]["width"]
    assert _median_x(root) == pytest.approx(left + 0.2 * (right - left), abs=0.01)
    assert _texts(root, "legend") == ["median 0.20"]

    widened = _svg(score_histogram(np.array([-1.0, 0.5, 1.0], dtype=np.float32), bins=4))  # median 0.5 of [-1, 1]
    bars = _bars(widened)
    left, right = bars[0]["x"], bars[-1]["x"] + bars[-1]["width"]
    assert _median_x(widened) == pytest.approx(left + 0.75 * (right - left), abs=0.01)
    assert _texts(widened, "legend") == ["median 0.50"]
