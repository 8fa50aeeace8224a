"""``pxflow annotate`` and ``pxflow backfill``: the bulk flows from the command line.

With nothing configured the flows run right here: tasks on threads (or a local
Dask cluster with ``--runner dask``), Prefect on its embedded ephemeral server,
outputs wherever ``--output`` points (a local folder or ``s3://``). With
``PREFECT_API_URL`` set, the same command reports to that server.

Exit status: 0 when every listed input has its row, 1 when some shard still
failed (rerun the same command to resume), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .predict import predict_kwargs


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", default="object_detection", help="pipeline name or YAML path (default object_detection)")
    p.add_argument("--shard-size", "--shard_size", dest="shard_size", type=int, default=None,
                   help="images per shard (default: tasks.shards.DEFAULT_SHARD_SIZE)")
    p.add_argument("--workers", type=int, default=2, help="shards processed at once (threads or Dask worker processes)")
    p.add_argument("--runner", choices=["thread", "dask"], default="thread", help="task runner (default thread)")
    p.add_argument("--dask-address", default=None, help="an existing Dask scheduler (with --runner dask)")
    p.add_argument("--force", action="store_true", help="recompute shards that are already committed")
    p.add_argument("--model_dir", "--model-dir", dest="model_dir", default=None, help="override the first model's model_dir")
    p.add_argument("--threshold", default=None, help="score threshold: a float or a dict {cls_id: float}")
    p.add_argument("--backend", default=None, choices=["auto", "paddle", "onnxruntime"], help="inference backend")
    p.add_argument("--download-workers", type=int, default=None, help="download/decode threads per shard (default 8)")
    p.add_argument("--prompt_type", default=None, choices=["box", "point"], help="open_vocabulary_segmentation prompt type")
    p.add_argument("--prompt", default=None, help="prompts for open_vocabulary_segmentation")
    p.add_argument("--index", default=None, help="PP-ShiTuV2 index directory")
    p.add_argument("--s3-block", default=None, help="Prefect Secret block with S3 settings (JSON)")
    p.add_argument("--no-progress", "--no_progress", dest="no_progress", action="store_true", help="no progress bar")


def build_parser(command: str) -> argparse.ArgumentParser:
    if command == "backfill":
        p = argparse.ArgumentParser(prog="pxflow backfill", description="Annotate dt=YYYY-MM-DD partitions between two dates.")
        p.add_argument("--input", required=True, help="prefix holding dt=YYYY-MM-DD/ partitions")
        p.add_argument("--output", required=True, help="output root (partitions mirror the input's)")
        p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
        p.add_argument("--end", required=True, help="last date, YYYY-MM-DD (inclusive)")
    else:
        p = argparse.ArgumentParser(prog="pxflow annotate", description="Annotate images into Parquet (objects + images tables).")
        p.add_argument("--input", required=True, help="prefix/folder of images, or a manifest (.parquet/.csv/.txt)")
        p.add_argument("--output", required=True, help="output root: local folder or s3:// prefix")
        p.add_argument("--partition", default=None, help="write into this Hive partition, e.g. dt=2024-01-01")
    _common(p)
    return p


def flow_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """CLI options -> flow parameters (only those given, so the flow's defaults apply otherwise)."""
    kwargs = predict_kwargs(args)
    threshold = kwargs.pop("threshold", None)  # a flow parameter of its own (it shows in the UI)
    params: dict[str, Any] = {
        "input": args.input,
        "output": args.output,
        "pipeline": args.pipeline,
        "concurrency": args.workers,
        "runner": args.runner,
        "force": args.force,
        "model_dir": args.model_dir,
        "threshold": threshold,
        "backend": args.backend,
        "predict_kwargs": kwargs or None,
        "dask_address": args.dask_address,
        "s3_block": args.s3_block,
    }
    if args.shard_size is not None:
        params["shard_size"] = args.shard_size
    if args.download_workers is not None:
        params["download_workers"] = args.download_workers
    for name in ("start", "end", "partition"):
        if getattr(args, name, None) is not None:
            params[name] = getattr(args, name)
    return params


class _Progress:
    """A tqdm bar over images, fed by the flow's progress callback (shards finish out of order)."""

    def __init__(self, disabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc="pxflow annotate", unit="img", disable=disabled or None, file=sys.stderr)
        self.images = 0

    def __call__(self, state: dict[str, Any]) -> None:
        if state.get("listing_done") or (self.bar.total or 0) < state["listed"]:
            self.bar.total = state["listed"]
        self.bar.set_postfix_str(f"shards {state['shards_done']}/{state['shards_planned']}", refresh=False)
        self.bar.update(state["images_done"] - self.images)
        self.images = state["images_done"]

    def close(self) -> None:
        self.bar.close()


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    args = build_parser(command).parse_args(rest)
    if args.shard_size is not None and args.shard_size < 1:
        build_parser(command).error("--shard-size must be >= 1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from pxflow.flows.annotate import annotate, set_progress_callback
    from pxflow.flows.backfill import backfill

    params = flow_parameters(args)
    progress = _Progress(args.no_progress)
    set_progress_callback(progress)
    try:
        flow_fn = backfill if command == "backfill" else annotate
        state = flow_fn(**params, return_state=True)
    finally:
        set_progress_callback(None)
        progress.close()
    if state.is_completed():
        result = state.result()
        print(json.dumps(_brief(result), indent=1, default=str))
        return 0
    try:
        state.result()
    except Exception as exc:
        print(f"pxflow {command}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    """What the terminal shows: counts and locations, not the whole config."""
    if "run_key" not in result:
        return result
    keys = ("run_key", "pipeline", "model_name", "listed_inputs", "rows_images", "rows_objects", "status_counts",
            "error_types", "shards_planned", "shards_skipped", "images_per_second", "tables", "manifest_uri", "complete")
    return {k: result.get(k) for k in keys}
