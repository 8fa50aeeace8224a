"""The run report at the end of an ``annotate`` run: written beside the tables, linked from a Prefect artifact.

Best effort by design: the tables and the ``runs`` row are the run's output; the report only
shows them. So any failure here (an unreadable input, a full disk, a bug) is one warning in
the run's log and never changes the run's outcome.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pxflow.pipelines.io.uri import is_remote
from pxflow.tasks.lake import Lake
from pxflow.tasks.report import write_report

from .inline import in_flow_run

log = logging.getLogger(__name__)


def _link(uri: str) -> str:
    """A link a browser can follow: ``file://`` for a local report, the URI itself otherwise."""
    return uri if is_remote(uri) or "://" in uri else Path(uri).resolve().as_uri()


def publish_report(lake: Lake, run_id: str, logger: logging.Logger | logging.LoggerAdapter | None = None) -> str | None:
    """Write the report of ``run_id`` and publish a markdown artifact pointing at it; None (and a warning) on failure.

    The artifact only in a flow run (it needs a Prefect API); the report is written either way."""
    logger = logger or log
    try:
        uri, data = write_report(lake, run_id)
        if in_flow_run():
            _publish_artifact(uri, data, run_id)
        logger.info("run report: %s", uri)
        return uri
    except Exception as exc:  # noqa: BLE001 - a report never fails the run
        logger.warning("run report not written (the run's tables are unaffected): %s: %s", type(exc).__name__, exc)
        return None


def _publish_artifact(uri: str, data: Any, run_id: str) -> None:
    """A markdown artifact linking the report, with its headline numbers."""
    from prefect.artifacts import create_markdown_artifact

    counts = data.class_counts()
    top = ", ".join(f"{label} {n}" for label, n in counts[:8]) or "no objects"
    errors = ", ".join(f"{t} {n}" for t, n, _ in data.error_examples(per_type=0)) or "none"
    diff = data.diff
    change = ("first run of this key" if diff.previous_run_id is None else
              f"{diff.new} new, {diff.changed} changed, {diff.removed} removed since run `{diff.previous_run_id}`")
    markdown = "\n".join([
        f"# run report `{run_id}`",
        f"[open the report]({_link(uri)}) (`{uri}`: samples with their boxes, per-class counts, scores, errors)",
        "",
        f"- inputs this run: {data.images.num_rows}; objects: {data.objects.num_rows}",
        f"- classes: {top}",
        f"- errors: {errors}",
        f"- {change}",
    ])
    key = f"report-{data.run['run_key']}"
    create_markdown_artifact(markdown=markdown, key=key, description=f"run report {run_id}")
