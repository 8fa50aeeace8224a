"""Run PaddleX 3.7.2 for the detection benchmark, inside PaddleX's own virtual environment.

This script imports only PaddleX (never pxflow), so PaddleX runs exactly as a
user would install it. ``bench_detection.py`` starts it once and keeps it
alive for the whole run, so PaddleX variants can be timed interleaved with the
pxflow and raw-loop variants instead of in a separate, differently loaded
window. It speaks a line protocol: JSON commands on stdin, and one
``@@JSON <object>`` line per answer on stdout (PaddleX and its backends log to
stdout/stderr freely; the marker separates our answers from their noise).

Commands:
    {"cmd": "time", "variant": name, "warmup": k}   -> {"seconds": s, "n": n}
    {"cmd": "boxes", "variant": name, "threshold": t} -> {"boxes": {filename: [box, ...]}}
    {"cmd": "quit"}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write("@@JSON " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def build(variant: dict[str, Any], model_name: str, model_dir: str):
    """``create_pipeline(config=...)`` as a PaddleX user writes it, with this variant's knobs."""
    from paddlex import create_pipeline

    config = {
        "pipeline_name": "object_detection",
        "SubModules": {
            "ObjectDetection": {
                "module_name": "object_detection",
                "model_name": model_name,
                "model_dir": model_dir,
                "batch_size": int(variant.get("batch_size", 1)),
                "img_size": None,
                "threshold": None,
            }
        },
    }
    kwargs: dict[str, Any] = {"config": config, "device": variant.get("device", "cpu")}
    if variant.get("engine"):
        kwargs["engine"] = variant["engine"]
    if variant.get("engine_config"):
        kwargs["engine_config"] = variant["engine_config"]
    return create_pipeline(**kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", required=True, help="JSON list of image paths, in order")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--variants", required=True, help="JSON {name: {engine, engine_config, batch_size}}")
    args = parser.parse_args()
    images: list[str] = json.loads(args.images)
    specs: dict[str, dict[str, Any]] = json.loads(args.variants)

    import paddlex

    pipelines = {}
    for name, spec in specs.items():
        try:
            pipelines[name] = build(spec, args.model_name, args.model_dir)
        except Exception as exc:  # report and go on: one unavailable engine must not sink the run
            pipelines[name] = exc
    reply(
        {
            "ready": True,
            "paddlex": paddlex.__version__,
            "errors": {n: f"{type(p).__name__}: {p}" for n, p in pipelines.items() if isinstance(p, Exception)},
        }
    )

    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        pipeline = pipelines.get(command.get("variant"))
        if pipeline is None or isinstance(pipeline, Exception):
            reply({"error": f"variant {command.get('variant')!r} unavailable: {pipeline}"})
            continue
        try:
            if command["cmd"] == "time":
                warmup = int(command.get("warmup", 3))
                for _ in pipeline.predict(images[:warmup]):
                    pass
                start = time.perf_counter()
                n = sum(1 for _ in pipeline.predict(images))
                reply({"seconds": time.perf_counter() - start, "n": n})
            elif command["cmd"] == "boxes":
                out = {}
                for res in pipeline.predict(images, threshold=float(command["threshold"])):
                    data = res.json["res"]
                    out[os.path.basename(data["input_path"])] = data["boxes"]
                reply({"boxes": out})
            else:
                reply({"error": f"unknown command {command['cmd']!r}"})
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()
