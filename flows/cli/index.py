"""``pxflow index build|append|remove|compact|info``: PP-ShiTu index maintenance on a directory.

Examples::

    pxflow index build  --gallery gallery/drink_label.txt --out idx/ --index_type IVF --metric_type IP
    pxflow index append --index idx/ --gallery new/labels.txt
    pxflow index remove --index idx/ --ids 3,17 --label "old product"
    pxflow index info   --index idx/

The recognition model comes from the pipeline config (``--pipeline``, default
``PP-ShiTuV2``: ``SubModules.Recognition``) or ``--rec_model_dir``. ``append``,
``remove`` and ``compact`` write back to ``--index`` unless ``--out`` is given; the
write is file-by-file atomic but NOT safe against a concurrent writer of the same
directory (see docs/index.md) — write to a new ``--out`` and switch readers over when
several processes maintain one index. Exit status: 0 ok, 1 some gallery images were
skipped, 2 usage or index errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pxflow.pipelines.models.backends import backend_names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pxflow index", description="Build and maintain PP-ShiTuV2 (faiss) indexes.")
    sub = p.add_subparsers(dest="action", required=True)

    def model_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--pipeline", default="PP-ShiTuV2", help="pipeline name or YAML (its SubModules.Recognition)")
        q.add_argument("--rec_model_dir", default=None, help="recognition model directory (overrides the config)")
        q.add_argument("--backend", default=None, choices=backend_names())
        q.add_argument("--device", default=None)
        q.add_argument("--gallery", required=True, help="label file: one 'path<whitespace>label' per line")
        q.add_argument("--gallery_root", default=None, help="folder the paths are relative to (default: the label file's)")

    b = sub.add_parser("build", help="a new index from a gallery label file")
    model_args(b)
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument("--index_type", default="HNSW32", choices=["Flat", "IVF", "HNSW32"])
    b.add_argument("--metric_type", default="IP", choices=["IP", "L2"])

    a = sub.add_parser("append", help="add a gallery's images to an index")
    model_args(a)
    a.add_argument("--index", required=True)
    a.add_argument("--out", default=None, help="write here instead of over --index")

    r = sub.add_parser("remove", help="remove entries by id and/or label")
    r.add_argument("--index", required=True)
    r.add_argument("--ids", default=None, help="comma-separated ids")
    r.add_argument("--ids_file", default=None, help="file with one id per line (first column)")
    r.add_argument("--label", action="append", default=[], help="remove every entry with this label (repeatable)")
    r.add_argument("--out", default=None)

    c = sub.add_parser("compact", help="rebuild the index structure from its live vectors (drops HNSW tombstones)")
    c.add_argument("--index", required=True)
    c.add_argument("--out", default=None)

    i = sub.add_parser("info", help="print the index's type, size and search settings as JSON")
    i.add_argument("--index", required=True)
    return p


def _feature_model(args: argparse.Namespace):
    from pxflow.pipelines.config import load_config
    from pxflow.pipelines.overrides import apply_overrides
    from pxflow.pipelines.predictors import create_predictor, submodule
    from pxflow.pipelines.settings import PxflowSettings

    config = apply_overrides(
        load_config(args.pipeline),
        settings={"backend": args.backend},
        assignments=[f"SubModules.Recognition.model_dir={args.rec_model_dir}"] if args.rec_model_dir else (),
    )
    settings = PxflowSettings.from_mapping(config.get("Pxflow"))
    return create_predictor(submodule(config, "Recognition"), settings, args.device or "cpu", "image_feature"), settings


def _embed(args: argparse.Namespace):
    from pxflow.pipelines.pp_shitu_v2.gallery import embed_gallery

    model, px = _feature_model(args)
    features, labels, skipped = embed_gallery(
        model, args.gallery_root or "", args.gallery, px.load_workers, px.prefetch
    )
    for s in skipped:
        print(f"pxflow index: skipped {s['input_path']}: {s['error_type']}: {s['message']}", file=sys.stderr)
    return model, features, labels, skipped


def summary(data: Any) -> dict[str, Any]:
    meta = data.meta
    return {
        "index_type": data.index_type,
        "metric_type": data.metric_type,
        "structure": meta.structure,
        "vectors": len(data),
        "labels": len(data.labels),
        "dim": data.dim,
        "nprobe": meta.nprobe,
        "ef_search": meta.ef_search,
        "tuned_recall": meta.tuned_recall,
        "tombstones": len(meta.tombstones),
        "appended_since_training": meta.appended_count,
        "model": meta.model,
    }


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "index" else argv)
    from pxflow.pipelines.retrieval import IndexData, IndexFormatError, append_index, build_index, compact_index, remove_index

    skipped: list = []
    try:
        if args.action == "build":
            model, features, labels, skipped = _embed(args)
            data = build_index(features, labels, args.index_type, args.metric_type, model=model.describe())
            target = args.out
        elif args.action == "append":
            current = IndexData.load(args.index)
            _, features, labels, skipped = _embed(args)
            data = append_index(features, labels, current)
            target = args.out or args.index
        elif args.action == "remove":
            ids = [int(v) for v in args.ids.split(",") if v.strip()] if args.ids else []
            if args.ids_file:
                from pxflow.pipelines.retrieval.builder import read_ids

                ids += read_ids(args.ids_file)
            if not ids and not args.label:
                print("pxflow index remove: give --ids, --ids_file or --label", file=sys.stderr)
                return 2
            before = IndexData.load(args.index)
            data = remove_index(ids, before, labels=args.label or None)
            print(f"pxflow index: removed {len(before) - len(data)} entries", file=sys.stderr)
            target = args.out or args.index
        elif args.action == "compact":
            data = compact_index(args.index)
            target = args.out or args.index
        else:  # info
            print(json.dumps(summary(IndexData.load(args.index)), ensure_ascii=False, indent=1))
            return 0
    except (IndexFormatError, ValueError, FileNotFoundError) as exc:
        print(f"pxflow index: {exc}", file=sys.stderr)
        return 2
    data.save(target)
    print(json.dumps({"index": target, **summary(data)}, ensure_ascii=False))
    return 1 if skipped else 0
