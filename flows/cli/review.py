"""``pxflow export label-studio|cvat``: a run's sample out to human review (see :mod:`pxflow.flows.review`).

They need no Prefect server (unless ``--s3-block`` names a block to read): usage errors (no tables, an
unknown run key, an ``--image-root`` that does not hold the images) are one line and exit 2, before
anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import one_line
from .eval import add_table_args, check_tables
from .server import PrefectScope


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_export_parsers(sub) -> None:
    """The ``label-studio`` and ``cvat`` subcommands of ``pxflow export``."""
    ls = sub.add_parser("label-studio", help="Label Studio tasks JSON with the run's boxes and masks as predictions")
    add_table_args(ls)
    ls.add_argument("--out", required=True, help="tasks JSON to write (local path or s3:// key)")
    ls.add_argument("--limit", type=positive_int, default=None, help="export the first N images (URI order)")
    ls.add_argument("--image-root", "--image_root", dest="image_root", default=None,
                    help="http(s) URL the images are served under, or Label Studio's local-files document root")
    cv = sub.add_parser("cvat", help="CVAT for images 1.1 XML (boxes and masks) or COCO 1.0 for CVAT")
    add_table_args(cv)
    cv.add_argument("--out", required=True, help="file to write (local path or s3:// key)")
    cv.add_argument("--format", choices=["cvat-images", "coco"], default="cvat-images")
    cv.add_argument("--limit", type=positive_int, default=None, help="export the first N images (URI order)")


def run_export(args: argparse.Namespace) -> int:
    prog = f"pxflow export {args.what}"
    from pxflow.flows.evaluate import TableError
    from pxflow.flows.review import export_cvat, export_label_studio
    from pxflow.pipelines.formats.review import FormatError

    with PrefectScope() as prefect:
        run_key = check_tables(prog, args, {}, prefect)
        if run_key is None:
            return 2
        common = {"output": args.output, "out": args.out, "run_key": run_key, "limit": args.limit,
                  "partition": args.partition, "s3_block": args.s3_block}
        try:
            if args.what == "label-studio":
                result = export_label_studio(**common, image_root=args.image_root)
            else:
                result = export_cvat(**common, format=args.format)
        except (FormatError, TableError) as exc:
            print(f"{prog}: {one_line(exc)}", file=sys.stderr)
            return 2
    print(json.dumps(result, ensure_ascii=False, default=str))
    return 0
