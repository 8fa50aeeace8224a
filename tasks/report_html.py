"""The run report as one self-contained HTML page: inline CSS, images as ``data:`` URIs, no script, no link out.

One file that opens anywhere (a browser, a mail attachment, an S3 console download) and shows the
same thing in a year: nothing is fetched when it is viewed.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any, Sequence

import numpy as np
import pyarrow.compute as pc

from .report_data import RunData
from .report_samples import Sample

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
main{max-width:1280px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
.meta{color:#5a6272;font-size:13px}.meta code{background:#e8ebf0;padding:1px 4px;border-radius:3px}
.verdict{display:inline-block;padding:2px 8px;border-radius:10px;font-weight:600;font-size:12px;margin-left:6px}
.ok{background:#dff3e4;color:#1d6b35}.bad{background:#fbe2e0;color:#9c2a1f}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.tile{background:#fff;border-radius:8px;padding:10px 14px;min-width:110px;box-shadow:0 1px 2px #0001}
.tile b{display:block;font-size:20px}.tile span{color:#5a6272;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:12px}
figure{margin:0;background:#fff;border-radius:8px;overflow:hidden;box-shadow:0 1px 2px #0001}
figure img{display:block;width:100%;height:200px;object-fit:contain;background:#222}
figure .none{height:200px;display:flex;align-items:center;justify-content:center;background:#fbe2e0;color:#9c2a1f;
  padding:8px;text-align:center;font-size:12px;box-sizing:border-box;overflow:hidden}
figcaption{padding:6px 8px;font-size:12px;word-break:break-all}
.tag{display:inline-block;font-size:11px;padding:0 6px;border-radius:8px;background:#e8ebf0;margin-right:4px}
.tag.error{background:#fbe2e0;color:#9c2a1f}.tag.lowest{background:#fff1d6;color:#8a5a00}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.charts img{background:#fff;border-radius:8px;box-shadow:0 1px 2px #0001;max-width:100%}
table{border-collapse:collapse;background:#fff;border-radius:8px;overflow:hidden;box-shadow:0 1px 2px #0001}
th,td{padding:5px 10px;text-align:left;border-bottom:1px solid #eef0f3;vertical-align:top;font-size:13px}
th{background:#eef0f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#1d6b35}.down{color:#9c2a1f}.empty{color:#5a6272;font-style:italic}
"""


def _tile(value: Any, label: str) -> str:
    return f'<div class="tile"><b>{escape(str(value))}</b><span>{escape(label)}</span></div>'


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(value, datetime) else str(value)


def _header(data: RunData) -> str:
    run = data.run
    verdict = ('<span class="verdict ok">complete</span>' if run["complete"]
               else '<span class="verdict bad">incomplete: rerun to finish</span>')
    duration = (run["ended_at"] - run["started_at"]).total_seconds()
    part = f" · partition <code>{escape(run['partition'])}</code>" if run["partition"] else ""
    tiles = [
        _tile(run["listed"], "listed"), _tile(run["images_inferred"], "inferred"), _tile(run["images_ok"], "ok"),
        _tile(run["images_error"], "errors"), _tile(run["objects_written"], "objects"),
        _tile(run["images_per_second"] if run["images_per_second"] is not None else "–", "images / s"),
        _tile(f"{duration:.1f} s", "duration"),
    ]
    return (
        f"<h1>annotate <code>{escape(str(run['pipeline']))}</code> / <code>{escape(str(run['model_name']))}</code>"
        f"{verdict}</h1>"
        f'<div class="meta">run <code>{escape(data.run_id)}</code> · key <code>{escape(run["run_key"])}</code>{part}'
        f" · {escape(_when(run['started_at']))} → {escape(_when(run['ended_at']))}<br>"
        f"input <code>{escape(str(run['input']))}</code> → output <code>{escape(str(run['output']))}</code> "
        f"(images v{run['images_version']}, objects v{run['objects_version']})</div>"
        f'<div class="tiles">{"".join(tiles)}</div>'
    )


def _changes(data: RunData) -> str:
    diff = data.diff
    if diff.previous_run_id is None:
        return '<h2 id="changes">Since the previous run</h2><p class="empty">The first run of this key: nothing to compare.</p>'
    tiles = "".join([_tile(diff.new, "new"), _tile(diff.changed, "changed (re-annotated)"), _tile(diff.removed, "removed"),
                     _tile(diff.unchanged, "unchanged")])
    moved = sorted(((k, a, b) for k, (a, b) in diff.classes.items() if a != b), key=lambda t: (-abs(t[2] - t[1]), t[0]))
    if moved:
        rows = "".join(
            f'<tr><td>{escape(k)}</td><td class="n">{a}</td><td class="n">{b}</td>'
            f'<td class="n {"up" if b > a else "down"}">{b - a:+d}</td></tr>' for k, a, b in moved
        )
        table = f"<table><tr><th>class</th><th>before</th><th>after</th><th>delta</th></tr>{rows}</table>"
    else:
        table = '<p class="empty">No class count changed.</p>'
    return (f'<h2 id="changes">Since the previous run</h2><div class="meta">previous run '
            f"<code>{escape(diff.previous_run_id)}</code>; all rows of this key</div>"
            f'<div class="tiles">{tiles}</div><h3>objects per class</h3>{table}')


def _samples(samples: Sequence[Sample]) -> str:
    if not samples:
        return '<h2 id="samples">Samples</h2><p class="empty">This run annotated no input.</p>'
    cards = []
    for s in samples:
        tag_class = {"error": "tag error", "lowest confidence": "tag lowest"}.get(s.reason, "tag")
        picture = (f'<img src="{s.data_uri}" alt="{escape(s.image_uri)}">' if s.data_uri
                   else f'<div class="none">{escape(s.problem or "")}</div>')
        cards.append(f'<figure class="sample">{picture}<figcaption><span class="{tag_class}">{escape(s.reason)}</span>'
                     f"{escape(s.caption)}<br><code>{escape(s.image_uri)}</code></figcaption></figure>")
    return f'<h2 id="samples">Samples</h2><div class="grid">{"".join(cards)}</div>'


def _classes(data: RunData, chart: str | None) -> str:
    counts = data.class_counts()
    if not counts:
        return '<h2 id="classes">Objects per class</h2><p class="empty">No objects.</p>'
    rows = "".join(f'<tr><td>{escape(k)}</td><td class="n">{n}</td></tr>' for k, n in counts)
    return (f'<h2 id="classes">Objects per class</h2><div class="charts"><img class="chart" src="{chart}" '
            f'alt="objects per class"><table><tr><th>class</th><th>objects</th></tr>{rows}</table></div>')


def _scores(chart: str | None) -> str:
    body = f'<img class="chart" src="{chart}" alt="score histogram">' if chart else '<p class="empty">No scores.</p>'
    return f'<h2 id="scores">Scores</h2><div class="charts">{body}</div>'


def _errors(data: RunData) -> str:
    found = data.error_examples()
    if not found:
        return '<h2 id="errors">Errors</h2><p class="empty">No input failed.</p>'
    rows = []
    for error_type, count, examples in found:
        shown = "".join(f"<div><code>{escape(uri)}</code>: {escape(message or '')}</div>" for uri, message in examples)
        rows.append(f'<tr class="error-type"><td><b>{escape(error_type)}</b></td><td class="n">{count}</td><td>{shown}</td></tr>')
    return (f'<h2 id="errors">Errors</h2><table><tr><th>error type</th><th>inputs</th><th>examples</th></tr>'
            f'{"".join(rows)}</table>')


def _throughput(data: RunData) -> str:
    run = data.run
    duration = (run["ended_at"] - run["started_at"]).total_seconds()
    rows = [("images inferred", run["images_inferred"]), ("wall time (s)", f"{duration:.1f}"),
            ("images / s (whole run)", run["images_per_second"] if run["images_per_second"] is not None else "–"),
            ("shards committed / planned", f"{run['shards_committed']} / {run['shards_planned']}"),
            ("shards skipped (already committed)", run["shards_skipped"]), ("shards failed", run["shards_failed"])]
    for column, label in (("download_ms", "read"), ("decode_ms", "decode")):
        values = data.images.column(column).drop_null() if column in data.images.column_names else None
        if values is not None and len(values):
            ms = np.asarray(values.to_numpy(), dtype=np.float64)
            rows.append((f"{label} per image, median / p95 (ms)",
                         f"{np.median(ms):.1f} / {np.percentile(ms, 95):.1f}"))
    body = "".join(f'<tr><td>{escape(k)}</td><td class="n">{escape(str(v))}</td></tr>' for k, v in rows)
    return f'<h2 id="throughput">Throughput</h2><table>{body}</table>'


def render_html(data: RunData, samples: Sequence[Sample], class_chart: str | None, score_chart: str | None) -> str:
    """The whole page."""
    ok = int(pc.sum(pc.equal(data.images.column("status"), "ok")).as_py() or 0) if data.images.num_rows else 0
    title = f"pxflow run {data.run_id}: {ok} ok / {data.images.num_rows} inputs"
    body = "".join([_header(data), _changes(data), _samples(samples), _classes(data, class_chart),
                    _scores(score_chart), _errors(data), _throughput(data)])
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body><main>{body}</main></body></html>\n")
