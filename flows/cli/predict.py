"""PaddleX-compatible prediction CLI: ``pxflow --pipeline NAME|YAML --input X --save_path DIR``.

Prints each result, writes ``{stem}_res.json`` and ``{stem}_res.<ext>`` to
``--save_path``, shows a progress bar for multi-image input, reports bad inputs
on stderr and goes on; the exit status is 1 when any input failed.
``--get_pipeline_config NAME [--save_path DIR]`` writes the pipeline's YAML.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from typing import Any

from tqdm import tqdm


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pxflow", description="PaddleX-compatible pipelines; see also `pxflow annotate -h`.")
    p.add_argument("--pipeline", help="pipeline name (object_detection ...) or a pipeline YAML path")
    p.add_argument("--input", help="image file, directory, http(s) URL or s3:// URI/prefix")
    p.add_argument("--device", default=None, help="cpu (default), gpu or gpu:N")
    p.add_argument("--save_path", default=None, help="directory for *_res.json and *_res.<ext> files")
    p.add_argument("--threshold", default=None, help="score threshold: a float or a JSON/dict {cls_id: float}")
    p.add_argument("--backend", default=None, choices=["auto", "paddle", "onnxruntime"], help="inference backend")
    p.add_argument("--batch_size", type=int, default=None, help="override the model batch size")
    p.add_argument("--model_dir", default=None, help="override the (first) model's model_dir")
    p.add_argument("--prompt_type", default=None, choices=["box", "point"], help="open_vocabulary_segmentation prompt type")
    p.add_argument("--prompt", default=None, help='prompts, e.g. "[[x1,y1,x2,y2], ...]" or "[[x,y], ...]"')
    p.add_argument("--index", default=None, help="PP-ShiTuV2 index directory")
    p.add_argument("--get_pipeline_config", default=None, metavar="NAME", help="write the pipeline's YAML and exit")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="do not print each result")
    return p


def parse_literal(text: str | None) -> Any:
    """A CLI value that may be a number, a JSON list/dict or a Python literal."""
    if text is None:
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    raise SystemExit(f"pxflow: cannot parse {text!r} as a number, list or dict")


def _override_first_submodule(config: dict[str, Any], key: str, value: Any) -> None:
    subs = config.get("SubModules") or {}
    if subs:
        first = next(iter(subs))
        subs[first][key] = value


def predict_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Per-call keyword arguments a pipeline's ``predict`` takes (only those given)."""
    kwargs: dict[str, Any] = {}
    if args.threshold is not None:
        kwargs["threshold"] = parse_literal(args.threshold)
    if args.prompt_type is not None:
        kwargs["prompt_type"] = args.prompt_type
    if args.prompt is not None:
        kwargs["prompt"] = parse_literal(args.prompt)
    if args.index is not None:
        kwargs["index"] = args.index
    return kwargs


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.get_pipeline_config:
        return write_pipeline_config(args.get_pipeline_config, args.save_path)
    if not args.pipeline or not args.input:
        build_parser().error("--pipeline and --input are required (or --get_pipeline_config NAME)")

    from pxflow.pipelines.config import load_config
    from pxflow.pipelines.registry import pipeline_class

    config = load_config(args.pipeline)
    if args.model_dir:
        _override_first_submodule(config, "model_dir", args.model_dir)
    if args.batch_size:
        _override_first_submodule(config, "batch_size", args.batch_size)
    if args.backend:
        config["Pxflow"]["backend"] = args.backend
    try:
        pipeline = pipeline_class(config["pipeline_name"])(config, device=args.device)
    except Exception as exc:
        print(f"pxflow: cannot create pipeline {args.pipeline!r}: {exc}", file=sys.stderr)
        return 2

    failures = 0
    total = 0
    progress = tqdm(desc="pxflow", unit="img", disable=args.no_progress or None, file=sys.stderr)
    try:
        for res in pipeline.predict(args.input, **predict_kwargs(args)):
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
        sys.stdout.write(text)
        return 0
    target = save_path if save_path.endswith((".yaml", ".yml")) else os.path.join(save_path, f"{name}.yaml")
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"pxflow: wrote {target}", file=sys.stderr)
    return 0
