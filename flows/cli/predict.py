"""PaddleX-compatible prediction CLI: ``pxflow --pipeline NAME|YAML --input X --save-path DIR``.

Prints each result, writes ``{stem}_res.json`` and ``{stem}_res.<ext>`` to
``--save-path``, shows a progress bar for multi-image input, reports bad inputs
on stderr and goes on; the exit status is 1 when any input failed.
``--get-pipeline-config NAME [--save-path DIR]`` writes the pipeline's YAML to
``DIR/NAME.yaml`` (a ``.yaml`` path is used as is), or to ``./NAME.yaml`` without
``--save-path``, as PaddleX does, and names the file on stderr.

Flags are kebab-case; PaddleX's snake_case spellings (``--save_path``, ``--model_dir``,
``--batch_size``, ``--prompt_type``, ``--get_pipeline_config``, ``--no_progress``) are aliases.
The pipeline's own flags (``--threshold``, ``--prompt-type``/``--prompt``, ``--index`` ...) come
from its spec's options model: ``pxflow --pipeline NAME --help`` lists them, and another
pipeline's flag is a usage error (exit 2) naming the pipeline's own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tqdm import tqdm

from pxflow.pipelines.models.backends import backend_names

from .errors import CliParser, model_error_line, one_line
from .pipeline_flags import add_pipeline_flags, given_options, refuse_other_pipelines_flags, requested_pipeline, spec_for
from .spellings import both_spellings


def build_parser(spec: Any = None) -> argparse.ArgumentParser:
    """Flags are kebab-case (``--save-path``); PaddleX's snake_case spellings (``--save_path``) are aliases.

    With ``spec`` (a pipeline's :class:`~pxflow.pipelines.spec.PipelineSpec`), that pipeline's own
    flags too, generated from its options model (:mod:`.pipeline_flags`).
    """
    p = CliParser(prog="pxflow", description="PaddleX-compatible pipelines; see also `pxflow annotate -h`.")
    p.add_argument("--pipeline", help="pipeline name (object_detection ...) or a pipeline YAML path")
    p.add_argument("--input", help="image file, directory, http(s) URL or s3:// URI/prefix")
    p.add_argument("--device", default=None, help="cpu (default), gpu or gpu:N (gpu:N,M uses the first)")
    p.add_argument("--save-path", "--save_path", dest="save_path", default=None,
                   help="directory for *_res.json and *_res.<ext> files (with --get-pipeline-config: where the YAML goes)")
    p.add_argument("--backend", default=None, choices=backend_names(), help="inference backend")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=None, help="override the model batch size")
    p.add_argument("--model-dir", "--model_dir", dest="model_dir", default=None, help="override the (first) model's model_dir")
    p.add_argument("--get-pipeline-config", "--get_pipeline_config", dest="get_pipeline_config", default=None, metavar="NAME",
                   help="write the pipeline's YAML (to ./NAME.yaml, or --save-path) and exit")
    p.add_argument("--no-progress", "--no_progress", dest="no_progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="do not print each result")
    if spec is not None:
        add_pipeline_flags(p, spec)
    return both_spellings(p)


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    """``--pipeline`` first, then every flag with that pipeline's own; an unknown pipeline or another
    pipeline's flag is a one-line usage error (exit 2), also with ``--help``."""
    pipeline = requested_pipeline(argv, None)
    if pipeline is None:
        return build_parser().parse_args(argv)
    try:
        spec = spec_for(pipeline)
        parser = build_parser(spec)
    except (ValueError, TypeError, OSError) as exc:
        build_parser().error(f"--pipeline: {one_line(exc)}")
    refuse_other_pipelines_flags(parser, spec, argv)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_command_line(argv)
    if args.get_pipeline_config:
        return write_pipeline_config(args.get_pipeline_config, args.save_path)
    if not args.pipeline or not args.input:
        build_parser().error("--pipeline and --input are required (or --get-pipeline-config NAME)")

    from pxflow.pipelines.config import load_config
    from pxflow.pipelines.models.source import ModelUnavailableError
    from pxflow.pipelines.options import check_options
    from pxflow.pipelines.overrides import apply_overrides
    from pxflow.pipelines.registry import pipeline_class

    try:
        spec = spec_for(args.pipeline)
        kwargs = check_options(spec.options_model(), spec.name, given_options(args))
        config = apply_overrides(
            load_config(args.pipeline), model_dir=args.model_dir, batch_size=args.batch_size,
            settings={"backend": args.backend}, options=kwargs,
        )
        pipeline = pipeline_class(config["pipeline_name"])(config, device=args.device)
        # models load lazily (SAM on first use): resolve every one now, so a missing model is one line, exit 2
        pipeline_class(config["pipeline_name"]).identity(config, kwargs)
    except ModelUnavailableError as exc:
        print(f"pxflow: {model_error_line(exc, 'give --model-dir DIR')}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"pxflow: cannot create pipeline {args.pipeline!r}: {exc}", file=sys.stderr)
        return 2

    failures = 0
    total = 0
    progress = tqdm(desc="pxflow", unit="img", disable=args.no_progress or None, file=sys.stderr)
    try:
        for res in pipeline.predict(args.input, **kwargs):
            total += 1
            progress.update(1)
            if not res.ok:
                failures += 1
                progress.write(f"pxflow: error: {res.input_path or '<array>'}: {res.error_type}: {res.error_message}", file=sys.stderr)
                continue
            if not args.quiet:
                progress.write(json.dumps(res.json, ensure_ascii=False), file=sys.stdout)
            if args.save_path:
                res.save_to_json(args.save_path)
                res.save_to_img(args.save_path)
    except (ValueError, TypeError) as exc:
        progress.close()
        print(f"pxflow: {exc}", file=sys.stderr)
        return 2
    progress.close()
    if total == 0:
        print(f"pxflow: no images found in {args.input}", file=sys.stderr)
        return 1
    if failures:
        print(f"pxflow: {failures} of {total} inputs failed", file=sys.stderr)
    return 1 if failures else 0


def write_pipeline_config(name: str, save_path: str | None) -> int:
    from pxflow.pipelines.config import builtin_config_path

    try:
        source = builtin_config_path(name)
    except ValueError as exc:
        print(f"pxflow: {exc}", file=sys.stderr)
        return 2
    with open(source, encoding="utf-8") as f:
        text = f.read()
    if not save_path:
        save_path = os.getcwd()  # PaddleX's docs: without --save_path the YAML lands in the current directory
    target = save_path if save_path.endswith((".yaml", ".yml")) else os.path.join(save_path, f"{name}.yaml")
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"pxflow: wrote {target}", file=sys.stderr)
    return 0
