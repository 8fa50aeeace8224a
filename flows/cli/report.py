"""``pxflow report``: (re)build the HTML report of an ``annotate`` run from its tables.

Examples::

    pxflow report --output out/annotations                 # the latest run
    pxflow report --output s3://bucket/annotations --run 0b6f...   # one run (its flow run id)

Reads only the Delta tables and the inputs (to draw the samples): no Prefect server is started
or contacted. Writes ``<output>/_reports/<run_id>.html`` (or ``--out FILE``) and prints its
location. Exit status: 0 written, 1 the report failed, 2 usage errors (no runs table under
``--output``, an unknown ``--run``).
"""

from __future__ import annotations

import argparse
import sys

from .errors import CliParser
from .spellings import both_spellings


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="pxflow report", description="Build the HTML report of an annotate run.")
    p.add_argument("--output", required=True, help="output root of `pxflow annotate` (local folder or s3:// prefix)")
    p.add_argument("--run", default=None, help="flow run id of the run (default: the latest run in the runs table)")
    p.add_argument("--out", default=None, help="write the page here instead of <output>/_reports/<run_id>.html")
    p.add_argument("--samples", type=int, default=12, help="how many of the first inputs to draw (default 12)")
    return both_spellings(p)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "report" else argv)
    if args.samples < 0:
        print("pxflow report: --samples must be >= 0", file=sys.stderr)
        return 2
    from pxflow.pipelines.io.storage import default_storage
    from pxflow.tasks.lake import Lake
    from pxflow.tasks.report import render_report, report_uri
    from pxflow.tasks.report_data import ReportError, load_run

    lake = Lake(args.output, default_storage())
    try:
        data = load_run(lake, args.run)  # usage errors (no tables, unknown run) before any drawing
    except (ReportError, ValueError, OSError) as exc:
        print(f"pxflow report: {exc}", file=sys.stderr)
        return 2
    try:
        html = render_report(lake, data, first=args.samples)
        uri = args.out or report_uri(args.output, data.run_id)
        lake.storage.write_bytes(uri, html.encode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        print(f"pxflow report: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(uri)
    return 0
