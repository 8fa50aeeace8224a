"""``pxflow lake optimize|vacuum``: maintenance of an ``annotate`` output's Delta tables.

Examples::

    pxflow lake optimize --output s3://bucket/annotations/
    pxflow lake vacuum   --output s3://bucket/annotations/                    # retention 168 h
    pxflow lake vacuum   --output out/ --retention-hours 24 --dry-run         # list, delete nothing

``optimize`` compacts the small per-shard files of ``images``, ``objects`` and ``runs`` (those that
exist) into large ones, rows unchanged. ``vacuum`` deletes data files that the tables stopped
referencing more than ``--retention-hours`` ago (default 168) and, without ``--table``, the
``_staging/`` folders of failed or killed ``--replace`` runs unchanged for as long (never one
holding a pending swap); it deletes for real unless ``--dry-run``. A retention below 1 h (``flows.maintenance.MIN_RETENTION_HOURS``) is refused
unless ``--force``: readers that opened the table earlier than that could lose files.
No Prefect server is started (the flows' bodies run inline) unless ``PREFECT_API_URL`` is set or
``--prefect`` is given. The last stdout line is a JSON report. Exit status: 0 ok, 1 the flow failed, 2 usage errors
(checked before any flow or Prefect server starts: one stderr line, e.g. a missing bucket).
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import CliParser, one_line
from .locations import check_location
from .server import PrefectScope, add_prefect_flag
from .spellings import both_spellings


def build_parser() -> argparse.ArgumentParser:
    from pxflow.flows.maintenance import DEFAULT_RETENTION_HOURS, MIN_RETENTION_HOURS

    p = CliParser(prog="pxflow lake", description="Delta table maintenance of an annotate output.")
    sub = p.add_subparsers(dest="action", required=True)
    for name, help_text in (("optimize", "compact small files (rows unchanged)"),
                            ("vacuum", "delete files no recent table version references")):
        q = sub.add_parser(name, help=help_text)
        q.add_argument("--output", required=True, help="output root of `pxflow annotate`")
        q.add_argument("--table", action="append", choices=["images", "objects", "runs"], default=None,
                       help="only this table (repeatable; default: every table that exists)")
        q.add_argument("--s3-block", "--s3_block", dest="s3_block", default=None,
                       help="Prefect Secret block with S3 settings (JSON)")
        add_prefect_flag(q)
    o = sub.choices["optimize"]
    o.add_argument("--target-size", "--target_size", dest="target_size", type=int, default=None,
                   help="target file size in bytes (default: delta-rs' 100 MiB)")
    v = sub.choices["vacuum"]
    v.add_argument("--retention-hours", "--retention_hours", dest="retention_hours", type=float,
                   default=DEFAULT_RETENTION_HOURS, help=f"keep files removed less than this ago (default {DEFAULT_RETENTION_HOURS:g})")
    v.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="list what would be deleted")
    v.add_argument("--force", action="store_true", help=f"allow a retention below {MIN_RETENTION_HOURS:g} h")
    v.add_argument("--full", action="store_true",
                   help="also delete files the log never referenced (left by crashed writers)")
    return both_spellings(p)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "lake" else argv)
    from pxflow.flows.maintenance import (RetentionTooShortError, check_retention, existing_tables, optimize_tables,
                                          vacuum_tables)

    prog = f"pxflow lake {args.action}"
    with PrefectScope(inline=not args.prefect) as prefect:
        try:
            if args.action == "vacuum":
                check_retention(args.retention_hours, args.force)
            if args.s3_block:  # the block's S3 settings are read through the Prefect API
                prefect.ensure()
            else:
                check_location(args.output, "--output")  # a missing bucket, a wrong key: one line now
            found = existing_tables(args.output, args.s3_block)
        except (RetentionTooShortError, ValueError, OSError) as exc:
            print(f"{prog}: {one_line(exc)}", file=sys.stderr)
            return 2
        if not found:
            print(f"{prog}: no Delta tables (images, objects, runs) under {args.output}", file=sys.stderr)
            return 2

        try:
            if args.action == "optimize":
                result = prefect.call(optimize_tables, output=args.output, tables=args.table,
                                      target_size=args.target_size, s3_block=args.s3_block)
            else:
                result = prefect.call(vacuum_tables, output=args.output, retention_hours=args.retention_hours,
                                      dry_run=args.dry_run, force=args.force, full=args.full, tables=args.table,
                                      s3_block=args.s3_block)
        except Exception as exc:
            print(f"{prog}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result, default=str))
    return 0
