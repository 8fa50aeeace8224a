"""``pxflow import-gt``: corrected labels from Label Studio, CVAT or a COCO file into ``<output>/ground_truth``.

Examples::

    pxflow import-gt --from label-studio export.json --output out/
    pxflow import-gt --from cvat annotations.xml --output out/ --source cvat-batch-7
    pxflow import-gt --from coco instances_val2017.json --output out/

Each call is one import (one Delta commit, its own ``import_id``); ``pxflow eval --gt lake`` scores a run
against the latest (``--gt-source NAME``: the latest of that source). The file is read and checked
completely first: a missing or malformed file is one line on stderr and exit 2, and nothing is written.
The last stdout line is a JSON summary. No Prefect server is involved (unless ``--s3-block``).
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import CliParser, one_line
from .spellings import both_spellings
from .locations import check_location
from .server import PrefectScope


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="pxflow import-gt", description="Store reviewed labels as ground truth.")
    p.add_argument("--from", dest="fmt", required=True, choices=["label-studio", "cvat", "coco"],
                   help="the file's format: Label Studio JSON export, CVAT for images 1.1 XML, COCO dataset JSON")
    p.add_argument("file", help="the tool's export (local path or s3:// key)")
    p.add_argument("--output", required=True, help="output root whose ground_truth table to append to")
    p.add_argument("--source", default=None, help="name of this ground truth (default: the format)")
    p.add_argument("--s3-block", "--s3_block", dest="s3_block", default=None,
                   help="Prefect Secret block with S3 settings (JSON)")
    return both_spellings(p)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "import-gt" else argv)
    prog = "pxflow import-gt"
    from pxflow.flows.review import import_ground_truth
    from pxflow.pipelines.formats.review import FormatError

    with PrefectScope() as prefect:
        try:
            if args.s3_block:
                prefect.ensure()
            else:
                check_location(args.output, "--output")
                check_location(args.file, "FILE")
            from pxflow.tasks.credentials import storage_for

            if not storage_for(args.s3_block).exists(args.file):
                raise FileNotFoundError(f"{args.file}: no such file")
            result = import_ground_truth(args.file, args.fmt, args.output, args.source, args.s3_block)
        except FormatError as exc:
            print(f"{prog}: {args.file} is not a {args.fmt} file: {one_line(exc)}", file=sys.stderr)
            return 2
        except (ValueError, OSError) as exc:
            print(f"{prog}: {one_line(exc)}", file=sys.stderr)
            return 2
    print(json.dumps(result, ensure_ascii=False, default=str))
    return 0
