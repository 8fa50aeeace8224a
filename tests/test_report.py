"""The run report: a real annotate run (PicoDet-XS ONNX, a few COCO images, a corrupt file and a text file),
its HTML page rendered by a real headless Chromium, and ``pxflow report`` rebuilding it from the tables alone."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pxflow.flows.cli import main as cli_main
from tests.conftest import COCO_MINI, PICODET_ONNX
from tests.support.annotate_helpers import read_table
from tests.support.browser import chromium, dump_dom  # noqa: F401  (session fixture)

PXFLOW = str(Path(sys.executable).with_name("pxflow"))
COCO = sorted((COCO_MINI / "images").glob("*.jpg")) if COCO_MINI.exists() else []

#: the test's own probe, injected into a copy of the page: what Chromium decoded for every <img>
PROBE = """<script>
window.addEventListener('load', () => {
  const seen = [...document.images].map(i => ({alt: i.alt, cls: i.className, w: i.naturalWidth, h: i.naturalHeight}));
  const out = document.createElement('pre'); out.id = 'probe'; out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
});
</script>"""


def _annotate(input_dir: Path, output: Path, *extra: str) -> None:
    argv = ["annotate", "--input", str(input_dir), "--output", str(output), "--model-dir", str(PICODET_ONNX),
            "--threshold", "0.3", "--shard-size", "4", "--no-progress", *extra]
    assert cli_main(argv) == 0


def _runs(output: Path) -> list[dict]:
    return sorted(read_table(f"{output}/runs").to_pylist(), key=lambda r: r["ended_at"])


@pytest.fixture(scope="module")
def two_runs(prefect_server, shared_dir, tmp_path_factory):
    """Run 1: five images, a truncated JPEG, a text file. Run 2 (``--prune``): one image added, one
    rewritten with another picture, one deleted. Returns (output, run 1, run 2, the input folder)."""
    root = tmp_path_factory.mktemp("report")
    images = root / "in"
    images.mkdir()
    for path in COCO[:5]:
        shutil.copy(path, images / path.name)
    (images / "corrupt.jpg").write_bytes(COCO[0].read_bytes()[:2000])
    (images / "notes.png").write_text("a text file, not a picture\n")
    output = root / "out"
    _annotate(images, output)
    shutil.copy(COCO[5], images / COCO[5].name)          # new
    shutil.copy(COCO[6], images / COCO[1].name)          # changed content, same name
    (images / COCO[2].name).unlink()                     # removed
    _annotate(images, output, "--prune")
    first, second = _runs(output)
    return output, first, second, images


def _images_of(output: Path, run: dict) -> list[dict]:
    rows = read_table(f"{output}/images", version=run["images_version"]).to_pylist()
    return [r for r in rows if r["flow_run_id"] == run["flow_run_id"]]


def _section(page: str, anchor: str) -> str:
    """The HTML from ``<h2 id=anchor>`` to the next ``<h2``."""
    start = page.index(f'<h2 id="{anchor}">')
    end = page.find("<h2", start + 1)
    return page[start:end if end != -1 else len(page)]


def test_flow_report_decodes_every_picture_and_chart_in_chromium(two_runs, chromium, tmp_path):
    output, first, _second, _ = two_runs
    page_path = output / "_reports" / f"{first['flow_run_id']}.html"
    page = page_path.read_text(encoding="utf-8")
    assert "<script" not in page.lower() and not re.search(r'(src|href)="(https?:|file:|//)', page)  # self-contained
    rows = _images_of(output, first)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 5 and len(rows) == 7

    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = dump_dom(chromium, probed.as_uri())
    seen = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))

    samples = [s for s in seen if s["cls"] != "chart"]
    charts = {s["alt"]: s for s in seen if s["cls"] == "chart"}
    # one drawn picture per ok input (five < the 12 first), none for the two failed inputs, all decoded
    assert sorted(s["alt"] for s in samples) == sorted(r["image_uri"] for r in ok)
    assert all(s["w"] > 0 and s["h"] > 0 for s in seen), seen
    assert set(charts) == {"objects per class", "score histogram"}
    assert all(c["w"] >= 300 for c in charts.values()), charts
    # the failed inputs are there as cards naming their error
    grid = _section(page, "samples")
    for row in rows:
        if row["status"] == "error":
            assert html.escape(row["image_uri"]) in grid and row["error_type"] in grid


def test_cli_report_lists_each_error_type_with_an_example_input_without_prefect(two_runs, tmp_path):
    output, first, _second, images = two_runs
    out = tmp_path / "first.html"
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # nothing listens: any Prefect call would fail
    done = subprocess.run([PXFLOW, "report", "--output", str(output), "--run", first["flow_run_id"], "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(out)
    errors = _section(out.read_text(encoding="utf-8"), "errors")
    failed = [r for r in _images_of(output, first) if r["status"] == "error"]
    by_type: dict[str, list[str]] = {}
    for row in failed:
        by_type.setdefault(row["error_type"], []).append(row["image_uri"])
    assert set(by_type) == {"decode_failed", "unsupported_format"}
    listed = re.findall(r'<tr class="error-type"><td><b>([^<]+)</b></td><td class="n">(\d+)</td><td>(.*?)</td></tr>', errors)
    assert {t: int(n) for t, n, _ in listed} == {t: len(u) for t, u in by_type.items()}
    for error_type, _n, examples in listed:
        assert any(html.escape(uri) in examples for uri in by_type[error_type]), (error_type, examples)
    # rebuilt after run 2 rewrote one input and deleted another: neither is drawn with run 1's (now wrong) boxes
    grid = _section(out.read_text(encoding="utf-8"), "samples")
    drawn = set(re.findall(r'<img src="data:image/jpeg;base64,[^"]+" alt="([^"]+)"', grid))
    rewritten, deleted = (str(images / COCO[i].name) for i in (1, 2))
    assert rewritten not in drawn and deleted not in drawn and len(drawn) == 3
    assert "the input changed since this run" in grid and "cannot re-read the input now" in grid


def test_rerun_report_counts_new_changed_removed_rows_and_class_deltas(two_runs):
    output, first, second, _ = two_runs
    page = (output / "_reports" / f"{second['flow_run_id']}.html").read_text(encoding="utf-8")
    changes = _section(page, "changes")
    tiles = dict((label, int(n)) for n, label in re.findall(r"<b>(\d+)</b><span>([^<]+)</span>", changes))
    # the test's own edits: one image added, one rewritten, one deleted; the other four rows untouched
    assert tiles == {"new": 1, "changed (re-annotated)": 1, "removed": 1, "unchanged": 5}
    assert first["flow_run_id"] in changes

    def labels(run: dict) -> Counter:
        rows = read_table(f"{output}/objects", version=run["objects_version"]).to_pylist()
        return Counter(r["label"] for r in rows if r["run_key"] == run["run_key"])

    before, after = labels(first), labels(second)
    moved = {k: (before[k], after[k]) for k in before.keys() | after.keys() if before[k] != after[k]}
    assert moved, "the edits were chosen to change some class counts"
    shown = {k: (int(a), int(b), int(d)) for k, a, b, d in re.findall(
        r'<tr><td>([^<]+)</td><td class="n">(\d+)</td><td class="n">(\d+)</td><td class="n \w+">([+-]\d+)</td></tr>',
        changes)}
    assert shown == {html.escape(k): (a, b, b - a) for k, (a, b) in moved.items()}


def test_report_usage_errors_exit_2_with_one_line(two_runs, tmp_path, capsys):
    output, *_ = two_runs
    assert cli_main(["report", "--output", str(tmp_path / "nothing")]) == 2
    assert cli_main(["report", "--output", str(output), "--run", "no-such-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no runs table" in err[0] and "no run 'no-such-run'" in err[1]
    assert not (tmp_path / "nothing").exists()


def test_a_report_that_cannot_be_written_never_fails_the_run(prefect_server, shared_dir, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(COCO[0], images / COCO[0].name)
    output = tmp_path / "out"
    output.mkdir()
    (output / "_reports").write_text("a file where the reports folder would go\n")
    _annotate(images, output)
    (run,) = _runs(output)
    assert run["complete"] and run["images_ok"] == 1
    assert (output / "_reports").is_file()
