"""``pxflow serve --pipeline NAME|YAML [--host 127.0.0.1] [--port 8080] ...``: PaddleX's serving API.

Builds the pipeline exactly as ``pxflow --pipeline`` and ``annotate`` do (``load_config`` ->
``apply_overrides`` -> the registry's class) and serves it with uvicorn; see docs/serving.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Any

from pxflow.pipelines.models.backends import backend_names

from .errors import CliParser
from .spellings import both_spellings

MIB = 1024 * 1024


def _at_least_one(text: str) -> int:
    """A cap given on the command line: a whole number >= 1 (``1e6`` accepted), else a usage error (exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if not value.is_integer() or value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(value)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _field_defaults(cls: type) -> dict[str, Any]:
    """A dataclass's plain field defaults: the serve flags take theirs from ``ServeOptions`` and ``Limits``, which
    own them (a default written again here would drift)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def build_parser() -> argparse.ArgumentParser:
    from pxflow.flows.serve.limits import Limits
    from pxflow.flows.serve.options import ServeOptions

    serve, limits = _field_defaults(ServeOptions), _field_defaults(Limits)
    p = CliParser(prog="pxflow serve", description="Serve a pipeline with PaddleX 3.x's HTTP API.")
    p.add_argument("serve", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--pipeline", required=True, help="pipeline name or YAML path")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--device", default=None, help="cpu (default), gpu or gpu:N")
    p.add_argument("--model-dir", "--model_dir", dest="model_dir", default=None, help="override the (first) model's model_dir")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=None, help="override the model batch size")
    p.add_argument("--backend", default=None, choices=backend_names(), help="inference backend")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="config override, e.g. SubModules.Detection.model_dir=/m (repeatable)")
    p.add_argument("--index", default=None, help="PP-ShiTuV2: the default index (dir, ROOT/NAME or ROOT/NAME@vNNNNNN)")
    p.add_argument("--index-root", "--index_root", dest="index_root", default=None,
                   help="PP-ShiTuV2: where /shitu-index-build creates versioned indexes (folder or s3:// prefix)")
    p.add_argument("--index-type", dest="index_type", default=serve["index_type"], choices=["Flat", "IVF", "HNSW32"])
    p.add_argument("--metric-type", dest="metric_type", default=serve["metric_type"], choices=["IP", "L2"])
    p.add_argument("--max-batch", type=int, default=serve["max_batch"], help="images per model call when requests are gathered")
    p.add_argument("--batch-window-ms", type=float, default=serve["window_ms"], help="how long a free model waits for requests on their way")
    p.add_argument("--workers", type=int, default=serve["workers"], help="model calls running at once (1 for very large models such as SAM-H)")
    p.add_argument("--max-queue", type=int, default=limits["max_queue"], help="requests waiting for the model before 503")
    p.add_argument("--max-body-mb", type=float, default=limits["max_body_bytes"] / MIB, help="largest request body")
    p.add_argument("--max-image-pixels", type=int, default=None, help="largest decoded image (default PXFLOW_MAX_IMAGE_PIXELS or 200M)")
    p.add_argument("--allow-fetch-from", action="append", default=[], metavar="CIDR|HOST",
                   help="addresses/hosts image URLs may point at even when private or loopback (repeatable, or comma-separated)")
    p.add_argument("--fetch-timeout", type=float, default=limits["fetch_timeout_s"], help="seconds for connecting to / reading an image URL")
    p.add_argument("--request-timeout", type=float, default=limits["request_timeout_s"], help="seconds a request may wait for inference")
    p.add_argument("--max-topk", "--max_topk", dest="max_topk", type=_at_least_one, default=limits["max_topk"],
                   help="largest topk of /shitu-infer (above: 422)")
    p.add_argument("--max-prompts", "--max_prompts", dest="max_prompts", type=_at_least_one, default=limits["max_prompts"],
                   help="most prompts per /open-vocabulary-segmentation request (above: 413)")
    p.add_argument("--max-request-pixels", "--max_request_pixels", dest="max_request_pixels", type=_at_least_one,
                   default=None, help="decoded pixels of one request, summed over its images, read from their headers "
                                      "(above: 413; default and maximum: --max-pixels-in-flight)")
    p.add_argument("--max-pixels-in-flight", "--max_pixels_in_flight", dest="max_pixels_in_flight", type=_at_least_one,
                   default=None, help="pixel units (decoded BGR pixels, 3 bytes) all requests may hold at once "
                                      "(default PXFLOW_MAX_PIXELS_IN_FLIGHT or 200M; sets it for predict() too)")
    p.add_argument("--admission-timeout", "--admission_timeout", dest="admission_timeout", type=_seconds, default=limits["admission_timeout_s"],
                   help="seconds a request waits for room in the pixel budget before 503")
    p.add_argument("--no-visualize", dest="visualize", action="store_false", help="leave result.image null")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the warm-up inference")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return both_spellings(p)


def serve_options(args: argparse.Namespace, in_flight: int) -> Any:
    """The app's ``ServeOptions`` from the parsed flags (``in_flight``: the process's pixel budget)."""
    from pxflow.flows.serve import Limits, ServeOptions
    from pxflow.pipelines.io.images import max_image_pixels

    allow = [part.strip() for entry in args.allow_fetch_from for part in entry.split(",") if part.strip()]
    limits = Limits(
        max_body_bytes=int(args.max_body_mb * MIB),
        max_image_pixels=args.max_image_pixels or max_image_pixels(),
        fetch_timeout_s=args.fetch_timeout, request_timeout_s=args.request_timeout,
        max_queue=args.max_queue, allow_fetch_from=allow, max_topk=args.max_topk, max_prompts=args.max_prompts,
        max_request_pixels=args.max_request_pixels, max_pixels_in_flight=in_flight,
        admission_timeout_s=args.admission_timeout,
    )
    return ServeOptions(
        limits=limits, visualize=args.visualize, max_batch=args.max_batch, window_ms=args.batch_window_ms,
        workers=args.workers, index_root=args.index_root, index_type=args.index_type, metric_type=args.metric_type,
        warmup=args.warmup,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from pxflow.pipelines.prefetch import DEFAULT_MAX_PIXELS_IN_FLIGHT, max_pixels_in_flight

    try:
        in_flight = args.max_pixels_in_flight or max_pixels_in_flight() or DEFAULT_MAX_PIXELS_IN_FLIGHT
    except ValueError as exc:  # a bad PXFLOW_MAX_PIXELS_IN_FLIGHT
        parser.error(str(exc))
    if args.max_request_pixels is not None and args.max_request_pixels > in_flight:
        parser.error(f"--max-request-pixels ({args.max_request_pixels}) exceeds --max-pixels-in-flight ({in_flight}): "
                     "such a request could never be admitted")
    # predict() reads its budget from the environment at each call: the server's requests share that one budget
    os.environ["PXFLOW_MAX_PIXELS_IN_FLIGHT"] = str(in_flight)
    from pxflow.pipelines.config import load_config
    from pxflow.pipelines.overrides import apply_overrides
    from pxflow.pipelines.registry import pipeline_class

    from pxflow.flows.serve import create_app, endpoints_for

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = apply_overrides(
            load_config(args.pipeline), model_dir=args.model_dir, batch_size=args.batch_size, device=args.device,
            index=args.index, settings={"backend": args.backend}, assignments=args.assignments,
        )
        endpoints = endpoints_for(config["pipeline_name"])  # a pipeline whose spec declares none stops here
        pipeline = pipeline_class(config["pipeline_name"])(config, device=args.device)
    except Exception as exc:
        print(f"pxflow serve: cannot serve pipeline {args.pipeline!r}: {exc}", file=sys.stderr)
        return 2
    options = serve_options(args, in_flight)
    limits = options.limits
    app = create_app(pipeline, options)
    import uvicorn

    print(f"pxflow serve: {config['pipeline_name']} on http://{args.host}:{args.port} ({', '.join(endpoints)})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.log_level == "debug",
                timeout_keep_alive=5, limit_concurrency=limits.max_concurrency)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
