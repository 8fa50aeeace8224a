"""``pxflow eval``: COCOeval (bbox / segm) of an ``annotate`` output, and recall@1 for PP-ShiTuV2.

Examples::

    pxflow eval --output out/ --gt instances_val2017.json
    pxflow eval --output out/ --gt instances_val2017.json --iou-type segm --run-key 0123456789abcdef
    pxflow eval --output out/ --labels gallery/drink_label.txt           # PP-ShiTuV2: recall@1
    pxflow eval --output out/ --gt lake [--gt-source NAME]              # against pxflow import-gt's table

The last line on stdout is one JSON object (``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``,
the ``AR*`` stats, ``images`` evaluated, ``run_key`` ...; ``recall@1`` and ``recall_images`` with
``--labels``). It runs the ``evaluate`` flow's body without a Prefect server (seconds, not the
20 s of a temporary server); with ``PREFECT_API_URL`` set or ``--prefect`` it runs as a flow run
and also publishes a Prefect markdown artifact ``eval-<run_key>``.
Exit status: 0 ok, 1 the flow failed, 2 usage errors (checked before any flow starts: missing
files, no Delta tables under ``--output``, a missing or ambiguous ``--run-key``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from .errors import CliParser, one_line
from .locations import check_location
from .server import PrefectScope, add_prefect_flag
from .spellings import both_spellings


def add_table_args(p: argparse.ArgumentParser) -> None:
    """``--output``, ``--run-key``, ``--partition``, ``--s3-block`` (shared with ``pxflow export``)."""
    p.add_argument("--output", required=True, help="output root of `pxflow annotate` (local folder or s3:// prefix)")
    p.add_argument("--run-key", "--run_key", dest="run_key", default=None,
                   help="the run to read (default: the only run key in the table)")
    p.add_argument("--partition", default=None, help="read one partition only, e.g. dt=2024-01-01")
    p.add_argument("--s3-block", "--s3_block", dest="s3_block", default=None,
                   help="Prefect Secret block with S3 settings (JSON)")
    add_prefect_flag(p)


def check_tables(prog: str, args: argparse.Namespace, files: dict[str, str | None],
                 prefect: PrefectScope) -> str | None:
    """Usage checks before any flow starts: the files exist, the tables exist, the run key resolves.

    Prints one line and returns None on a usage error; else returns the run key. Only with
    ``--s3-block`` does the Prefect API start first (the block's settings are read through it).
    """
    from pxflow.flows.evaluate import TableError, check_masks, lake_for, resolve_run_key

    try:
        if args.s3_block:
            prefect.ensure()
        else:
            # a missing bucket, a wrong key: one line now (``--out``: pxflow export's file)
            for flag, uri in (("--output", args.output), ("--out", getattr(args, "out", None))):
                if uri:
                    check_location(uri, flag)
        lake = lake_for(args.output, args.s3_block)
        for flag, path in files.items():
            if path and not lake.storage.exists(path):
                raise TableError(f"{flag} {path}: no such file")
        run_key = resolve_run_key(lake, args.run_key, args.partition)
        if getattr(args, "iou_type", None) == "segm":  # a detection run: say so now, not as the flow's traceback
            check_masks(lake, run_key, args.partition)
        return run_key
    except (TableError, ValueError, OSError) as exc:
        print(f"{prog}: {one_line(exc)}", file=sys.stderr)
        return None


def run_flow(prog: str, flow_fn: Callable[..., Any], params: dict[str, Any], prefect: PrefectScope) -> tuple[int, Any]:
    """Run ``flow_fn`` (through ``prefect``: inline or as a flow run) and return ``(exit status, result)``;
    a failure is one line on stderr."""
    try:
        result = prefect.call(flow_fn, **params)
    except Exception as exc:
        from pxflow.flows.evaluate import TableError

        print(f"{prog}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return (2 if isinstance(exc, TableError) else 1), None
    return 0, result


def check_lake_gt(prog: str, args: argparse.Namespace) -> bool:
    """``--gt lake``: the output has a ground-truth import (of ``--gt-source``); else one line and False."""
    from pxflow.flows.evaluate import lake_for
    from pxflow.tasks.ground_truth import GroundTruthError, latest_import

    try:
        latest_import(lake_for(args.output, args.s3_block), args.gt_source)
    except GroundTruthError as exc:
        print(f"{prog}: {one_line(exc)}", file=sys.stderr)
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="pxflow eval", description="COCO evaluation of an annotate output (Delta tables).")
    add_table_args(p)
    p.add_argument("--gt", default=None,
                   help="COCO ground-truth JSON (instances_*.json), or `lake`: the output's ground_truth table")
    p.add_argument("--gt-source", "--gt_source", dest="gt_source", default=None,
                   help="with --gt lake: the latest import of this source (default: the latest import)")
    p.add_argument("--iou-type", "--iou_type", dest="iou_type", choices=["bbox", "segm"], default="bbox")
    p.add_argument("--labels", default=None, help="PP-ShiTuV2: gallery label file (path<TAB>label) for recall@1")
    p.add_argument("--labels-root", "--labels_root", dest="labels_root", default=None,
                   help="folder the label file's paths are relative to (default: the label file's folder)")
    return both_spellings(p)


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv[1:] if argv and argv[0] == "eval" else argv)
    if args.gt is None and args.labels is None:
        parser.error("give --gt (COCO ground truth) and/or --labels (PP-ShiTuV2 recall@1)")
    if args.gt_source is not None and args.gt != "lake":
        parser.error("--gt-source needs --gt lake")
    from pxflow.flows.evaluate import evaluate

    with PrefectScope(inline=not args.prefect) as prefect:
        gt_file = None if args.gt == "lake" else args.gt
        run_key = check_tables("pxflow eval", args, {"--gt": gt_file, "--labels": args.labels}, prefect)
        if run_key is None or (args.gt == "lake" and not check_lake_gt("pxflow eval", args)):
            return 2
        params = {"output": args.output, "gt": args.gt, "iou_type": args.iou_type, "run_key": run_key,
                  "labels": args.labels, "labels_root": args.labels_root, "partition": args.partition,
                  "s3_block": args.s3_block, "gt_source": args.gt_source}
        code, result = run_flow("pxflow eval", evaluate, params, prefect)
    if code:
        return code
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "recall@1"):
        if result.get(key) is not None:
            print(f"{key:>8} {result[key]:.4f}")
    sys.stdout.flush()
    print(json.dumps(result, ensure_ascii=False, default=str))
    return 0
