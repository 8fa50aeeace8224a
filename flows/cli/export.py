"""``pxflow export coco``: an ``annotate`` output as COCO JSON.

Examples::

    pxflow export coco --output out/ --out dets.json --gt instances_val2017.json   # results, GT ids
    pxflow export coco --output out/ --out dataset.json --format dataset            # for CVAT / Label Studio
    pxflow export label-studio --output out/ --out tasks.json --limit 200            # review (flows/cli/review.py)
    pxflow export cvat --output out/ --out annotations.xml [--format cvat-images|coco]

``--format results`` (default) writes ``[{image_id, category_id, bbox: [x, y, w, h], score,
segmentation?}]`` (masks as compressed RLE), what ``COCO.loadRes`` reads; ``--format dataset``
writes ``{images, annotations, categories}`` with one image entry per ``images`` row. With
``--gt`` image and category ids are the ground truth's (class ids by index onto its sorted
category ids); without, images are numbered 1.. in URI order and category ids are ``cls_id + 1``
(see docs/evaluation.md). ``--out`` may be a local path or an ``s3://`` key. The last stdout line
is a JSON summary. Exit status: 0 ok, 1 the flow failed, 2 usage errors (before any flow starts).
"""

from __future__ import annotations

import argparse
import json

from .errors import CliParser
from .eval import add_table_args, check_tables, run_flow
from .review import add_export_parsers, run_export
from .server import PrefectScope
from .spellings import both_spellings


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="pxflow export", description="Export annotate outputs.")
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("coco", help="COCO results or COCO dataset JSON")
    add_table_args(c)
    c.add_argument("--out", required=True, help="file to write (local path or s3:// key)")
    c.add_argument("--gt", default=None, help="COCO ground truth whose image and category ids to use")
    c.add_argument("--format", choices=["results", "dataset"], default="results")
    add_export_parsers(sub)  # label-studio, cvat: the review round trip (flows/cli/review.py)
    return both_spellings(p)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "export" else argv)
    if args.what != "coco":
        return run_export(args)
    prog = f"pxflow export {args.what}"
    from pxflow.flows.evaluate import export_coco

    with PrefectScope(inline=not args.prefect) as prefect:
        run_key = check_tables(prog, args, {"--gt": args.gt}, prefect)
        if run_key is None:
            return 2
        params = {"output": args.output, "out": args.out, "run_key": run_key, "gt": args.gt, "format": args.format,
                  "partition": args.partition, "s3_block": args.s3_block}
        code, result = run_flow(prog, export_coco, params, prefect)
    if code:
        return code
    print(json.dumps(result, ensure_ascii=False, default=str))
    return 0
