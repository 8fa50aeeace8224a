"""``pxflow index build|append|remove|rollback|list|gc|refresh|compact|info``: PP-ShiTu index maintenance.

Versioned indexes (``--root URI --name NAME``: ``<root>/<name>/v000001/`` + ``CURRENT``, see
docs/index.md) are maintained by the Prefect flows of :mod:`pxflow.flows.index`; every write
publishes a new immutable version by compare-and-swap, so concurrent writers never lose an update::

    pxflow index build    --root s3://b/indexes --name drinks --gallery s3://b/gallery/drink_label.txt --index_type IVF
    pxflow index append   --root s3://b/indexes --name drinks --gallery new/labels.txt
    pxflow index remove   --root s3://b/indexes --name drinks --ids 3,17 --label "old product"
    pxflow index rollback --root s3://b/indexes --name drinks --version v000002
    pxflow index refresh  --root s3://b/indexes --name drinks --gallery s3://b/gallery/
    pxflow index gc       --root s3://b/indexes --name drinks --keep 5
    pxflow index list     --root s3://b/indexes --name drinks --json

They run the flows' bodies without a Prefect server (seconds, not a server's start-up) unless
``PREFECT_API_URL`` is set, ``--prefect`` is given or feature shards go to a ``--runner`` other than
``thread``. Flags are kebab-case (``--index-type``) with PaddleX's snake_case (``--index_type``) as alias.
Each prints one JSON object (``list --json``: one JSON array) on stdout; while models load and
run, file descriptor 1 is pointed at stderr so nothing a native library prints can break it.

Folder-level commands (PaddleX-style, one directory, no versions)::

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
import contextlib
import functools
import json
import os
import sys
from typing import Any, Callable

from pxflow.pipelines.models.backends import backend_names

from .errors import CliParser, UsageError, one_line
from .server import PrefectScope, add_prefect_flag
from .spellings import both_spellings


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="pxflow index", description="Build and maintain PP-ShiTuV2 (faiss) indexes.")
    sub = p.add_subparsers(dest="action", required=True)

    def model_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--pipeline", default="PP-ShiTuV2", help="pipeline name or YAML (its SubModules.Recognition)")
        q.add_argument("--rec_model_dir", default=None, help="recognition model directory (overrides the config)")
        q.add_argument("--backend", default=None, choices=backend_names())
        q.add_argument("--device", default=None)
        q.add_argument("--gallery", default=None, help="label file ('path<whitespace>label' lines), manifest with a label column, or a folder with one label file")
        q.add_argument("--gallery_root", default=None, help="folder the paths are relative to (default: the label file's)")

    def versioned(q: argparse.ArgumentParser) -> None:
        q.add_argument("--root", default=None, help="index root (local folder or s3:// prefix) of versioned indexes")
        q.add_argument("--name", default=None, help="index name under --root")
        q.add_argument("--s3_block", default=None, help="Prefect Secret block with S3 settings (default: AWS environment)")
        q.add_argument("--json", action="store_true", help="print JSON only (the default for every command but list)")
        add_prefect_flag(q)

    def flow_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--runner", default="thread", help="task runner for feature shards (thread, process, dask, ray, a plug-in's)")
        q.add_argument("--concurrency", type=int, default=2)
        q.add_argument("--shard_size", type=int, default=64)

    b = sub.add_parser("build", help="a new index from a gallery label file")
    model_args(b)
    versioned(b)
    flow_args(b)
    b.add_argument("--out", default=None, help="index directory to write (folder mode)")
    b.add_argument("--index_type", default="HNSW32", choices=["Flat", "IVF", "HNSW32"])
    b.add_argument("--metric_type", default="IP", choices=["IP", "L2"])

    a = sub.add_parser("append", help="add a gallery's images to an index")
    model_args(a)
    versioned(a)
    flow_args(a)
    a.add_argument("--index", default=None)
    a.add_argument("--out", default=None, help="write here instead of over --index")

    r = sub.add_parser("remove", help="remove entries by id and/or label")
    versioned(r)
    r.add_argument("--index", default=None)
    r.add_argument("--ids", default=None, help="comma-separated ids")
    r.add_argument("--ids_file", default=None, help="file with one id per line (first column)")
    r.add_argument("--label", action="append", default=[], help="remove every entry with this label (repeatable)")
    r.add_argument("--out", default=None)

    c = sub.add_parser("compact", help="rebuild the index structure from its live vectors (drops HNSW tombstones)")
    c.add_argument("--index", required=True)
    c.add_argument("--out", default=None)

    i = sub.add_parser("info", help="print the index's type, size and search settings as JSON")
    i.add_argument("--index", required=True)

    rb = sub.add_parser("rollback", help="publish a new version with exactly an earlier version's content")
    versioned(rb)
    rb.add_argument("--version", required=True, help="the version to restore (v000003)")

    ls = sub.add_parser("list", help="the published versions (oldest first)")
    versioned(ls)

    g = sub.add_parser("gc", help="delete old versions and orphans (never CURRENT or a pinned version)")
    versioned(g)
    g.add_argument("--keep", type=int, default=5, help="published versions to keep, CURRENT included")

    rf = sub.add_parser("refresh", help="append the gallery images added since the current version, remove those deleted")
    model_args(rf)
    versioned(rf)
    flow_args(rf)
    return both_spellings(p)


def _feature_model(args: argparse.Namespace):
    from pxflow.pipelines.predictors import create_predictor
    from pxflow.pipelines.settings import PxflowSettings
    from pxflow.pipelines.pp_shitu_v2.gallery import recognition_config

    config, section = recognition_config(args.pipeline, args.rec_model_dir, args.backend)
    settings = PxflowSettings.from_mapping(config.get("Pxflow"))
    return create_predictor(section, settings, args.device or "cpu", "image_feature"), settings


def _check_model(args: argparse.Namespace) -> None:
    """The recognition model exists (or downloads) before any Prefect server starts: a missing one
    raises ``ModelUnavailableError``, which :func:`pxflow.flows.cli.main` prints as one line, exit 2."""
    from pxflow.pipelines.pp_shitu_v2.gallery import recognition_config, recognition_identity

    recognition_identity(recognition_config(args.pipeline, args.rec_model_dir, args.backend)[1])


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
    if getattr(args, "root", None) or args.action in VERSIONED_ONLY:
        return versioned_main(args)
    return folder_main(args)


def folder_main(args: argparse.Namespace) -> int:
    from pxflow.pipelines.io.errors import InputError
    from pxflow.pipelines.retrieval import IndexData, IndexFormatError, append_index, build_index, compact_index, remove_index

    skipped: list = []
    if args.action in ("build", "append") and not args.gallery:
        print(f"pxflow index {args.action}: --gallery is required (a label file with 'path<TAB>label' lines)", file=sys.stderr)
        return 2
    if args.action == "build" and not args.out:
        print("pxflow index build: give --out DIR (folder mode) or --root URI --name NAME (versioned)", file=sys.stderr)
        return 2
    if args.action in ("append", "remove") and not args.index:
        print(f"pxflow index {args.action}: give --index DIR (folder mode) or --root URI --name NAME (versioned)", file=sys.stderr)
        return 2
    try:
        if args.action == "build":
            model, features, labels, skipped = _embed(args)
            data = build_index(features, labels, args.index_type, args.metric_type, model=model.describe())
            target = args.out
        elif args.action == "append":
            current = IndexData.load(args.index)
            model, features, labels, skipped = _embed(args)
            recorded = (current.meta.model or {}).get("sha256")
            if recorded and recorded != model.describe()["sha256"]:
                raise ValueError(
                    f"{args.index}/pxflow_index.json: the index was built with another recognition model "
                    f"({recorded[:12]}, this one is {model.describe()['sha256'][:12]}); rebuild it instead of appending"
                )
            if features.shape[1] != current.dim:
                raise ValueError(f"{args.index}/vector.index holds {current.dim}-d vectors, the recognition model makes {features.shape[1]}-d features")
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
    except (IndexFormatError, ValueError, FileNotFoundError, InputError) as exc:
        print(f"pxflow index: {one_line(exc)}", file=sys.stderr)
        return 2
    data.save(target)
    print(json.dumps({"index": target, **summary(data)}, ensure_ascii=False))
    return 1 if skipped else 0


# ---------------------------------------------------------------- versioned indexes (--root/--name)

#: commands that exist only for versioned indexes
VERSIONED_ONLY = ("rollback", "list", "gc", "refresh")


@contextlib.contextmanager
def stdout_to_stderr():
    """Point file descriptor 1 (and ``sys.stdout``) at stderr, so native libraries that print
    (Paddle's "ReduceMeanCheckIfOneDNNSupport") cannot break the JSON printed afterwards."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _flow_model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from pxflow.flows.options import FeatureOptions

    features = FeatureOptions(
        gallery_root=args.gallery_root, pipeline=args.pipeline, rec_model_dir=args.rec_model_dir, backend=args.backend,
        device=args.device or "cpu", runner=args.runner, concurrency=args.concurrency, shard_size=args.shard_size,
    )
    return {"features": features, "s3_block": args.s3_block}


def _versioned_call(args: argparse.Namespace) -> Callable[[], Any]:
    """Check ``args`` (raising one-line errors) and return the call that does the work: a plain
    function, or ``functools.partial`` of a flow (run through :meth:`PrefectScope.call`).

    Every check reads storage only, so a bad request ends before any Prefect server starts.
    """
    from pxflow.flows import index as flows

    common = {"root": args.root, "name": args.name}
    if args.action == "list":
        return _repo(args).list
    if args.action in ("build", "append", "refresh") and not args.gallery:
        raise UsageError("--gallery is required (label file, manifest with a label column, or a folder with one label file)")
    if args.action == "build":
        return functools.partial(flows.index_build, **common, gallery=args.gallery, index_type=args.index_type,
                                 metric_type=args.metric_type, **_flow_model_kwargs(args))
    if args.action == "append":
        return functools.partial(flows.index_append, **common, gallery=args.gallery, **_flow_model_kwargs(args))
    if args.action == "refresh":
        return functools.partial(flows.index_refresh, **common, gallery_prefix=args.gallery, **_flow_model_kwargs(args))
    if args.action == "remove":
        ids = [int(v) for v in args.ids.split(",") if v.strip()] if args.ids else []
        if args.ids_file:
            from pxflow.pipelines.retrieval.builder import read_ids

            ids += read_ids(args.ids_file)
        if not ids and not args.label:
            raise UsageError("give --ids, --ids_file or --label")
        _precheck_remove(args, ids)
        return functools.partial(flows.index_remove, **common, ids=ids or None, labels=args.label or None,
                                 s3_block=args.s3_block)
    if args.action == "rollback":
        _repo(args).manifest(args.version)  # an unknown version: one line, before any flow starts
        return functools.partial(flows.index_rollback, **common, version=args.version, s3_block=args.s3_block)
    if args.action == "gc":
        return functools.partial(flows.index_gc, **common, keep=args.keep, s3_block=args.s3_block)
    raise UsageError(f"pxflow index {args.action} works on folders (--index DIR), not on --root/--name")


def _repo(args: argparse.Namespace):
    from pxflow.pipelines.retrieval.versions import IndexRepo
    from pxflow.tasks.credentials import storage_for

    return IndexRepo(args.root, args.name, storage_for(args.s3_block))


def _precheck_remove(args: argparse.Namespace, ids: list[int]) -> None:
    """Ids or labels the current version lacks: one clear line before any flow starts (the flow checks again)."""
    from pxflow.pipelines.retrieval.versions import NothingToChange

    repo = _repo(args)
    version = repo.require_current()
    id_map = repo.load(version).id_map
    unknown_ids = sorted({i for i in ids if i not in id_map})
    unknown_labels = sorted({lab for lab in args.label if lab not in set(id_map.values())})
    what = ([f"ids {unknown_ids}"] if unknown_ids else []) + ([f"labels {unknown_labels}"] if unknown_labels else [])
    if what:
        raise NothingToChange(f"{repo.base}: {' and '.join(what)} not in the current version {version}; nothing removed, no new version")


def _inline(args: argparse.Namespace) -> bool:
    """Run without a Prefect server: every command but ``--prefect`` ones and those that fan feature
    shards out to a runner whose shards leave this process (dask, ray: their flow run owns the cluster)."""
    from pxflow.flows.runners import get_runner

    return not args.prefect and get_runner(getattr(args, "runner", None) or "thread").runs_inline


def versioned_main(args: argparse.Namespace) -> int:
    """``--root``/``--name`` commands: run the flow, print its result as JSON. Exit 0 ok, 1 some gallery
    images skipped, 2 usage/index errors (one line on stderr)."""
    from pxflow.pipelines.io.errors import InputError
    from pxflow.pipelines.retrieval import IndexFormatError
    from pxflow.pipelines.retrieval.versions import VersionError, check_name

    from .locations import check_location

    if not args.root or not args.name:
        print(f"pxflow index {args.action}: --root and --name are required", file=sys.stderr)
        return 2
    try:
        with stdout_to_stderr(), PrefectScope(inline=_inline(args)) as prefect:
            try:
                check_name(args.name)  # '../../etc' or 'x/y' would write outside --root/NAME
            except VersionError as exc:
                raise UsageError(f"--name: {exc}") from None
            if args.s3_block:  # the block's S3 settings are read through the Prefect API
                prefect.ensure()
            else:
                check_location(args.root, "--root")  # a missing bucket, a wrong key: one line now
            call = _versioned_call(args)
            if args.action in ("build", "append", "refresh"):
                _check_model(args)
            if isinstance(call, functools.partial):  # a flow: inline or on the Prefect API
                result = prefect.call(call.func, *call.args, **call.keywords)
            else:
                result = call()
    except (IndexFormatError, ValueError, FileNotFoundError, InputError) as exc:
        print(f"pxflow index {args.action}: {one_line(exc)}", file=sys.stderr)
        return 2
    if args.action == "list" and not args.json:
        for row in result:
            mark = "*" if row["current"] else " "
            print(f"{mark} {row['version']}  {row['operation']:<8} ntotal={row['ntotal']:<7} labels={row['labels']:<5} parent={row['parent']}")
        return 0
    print(json.dumps(result, ensure_ascii=False))
    for s in (result.get("skipped") or []) if isinstance(result, dict) else []:
        print(f"pxflow index: skipped {s['uri']}: {s['error_type']}: {s['message']}", file=sys.stderr)
    return 1 if isinstance(result, dict) and result.get("skipped") else 0
