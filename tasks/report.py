"""Build a run's report from the tables and write it beside them: ``<output>/_reports/<run_id>.html``.

The one entry point both the ``annotate`` flow (at the end of a run) and ``pxflow report`` (any
time later, with no Prefect server) use, so both produce the same page from the same rows.
"""

from __future__ import annotations

from pxflow.pipelines.io.uri import join_uri
from pxflow.tasks.lake import Lake

from .report_charts import class_counts_chart, score_histogram
from .report_data import RunData, load_run, scores
from .report_html import render_html
from .report_samples import draw_samples, pick_samples

REPORTS_DIR = "_reports"


def report_uri(output: str, run_id: str) -> str:
    """Where the report of ``run_id`` lives under ``output``."""
    return join_uri(output, REPORTS_DIR, f"{run_id}.html")


def render_report(lake: Lake, data: RunData, first: int = 12) -> str:
    """The report page of a loaded run: its samples drawn (inputs re-read through ``lake.storage``), its charts."""
    samples = draw_samples(data, lake.storage, pick_samples(data, first=first))
    return render_html(data, samples, class_counts_chart(data.class_counts()), score_histogram(scores(data)))


def build_report(lake: Lake, run_id: str | None = None, first: int = 12) -> tuple[str, RunData]:
    """The report page of ``run_id`` (default: the latest run) and the rows it was made from."""
    data = load_run(lake, run_id)
    return render_report(lake, data, first), data


def write_report(lake: Lake, run_id: str | None = None, first: int = 12) -> tuple[str, RunData]:
    """Build the report and write it (atomically, local or S3); returns its URI and the rows."""
    html, data = build_report(lake, run_id, first)
    uri = report_uri(lake.output, data.run_id)
    lake.storage.write_bytes(uri, html.encode("utf-8"))
    return uri, data
