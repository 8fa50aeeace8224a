"""Wall time of maintenance commands and a 10-image ``annotate``, as a user runs them (BENCHMARKS.md, CLI).

    python bench/bench_cli.py [--code DIR]   # DIR: a checkout to time (default: this one), e.g. a
                                             # `git worktree add /tmp/before <commit>` of the base

Each command is the real CLI (``python -m pxflow.flows`` with the checkout first on ``sys.path``)
in a fresh process, without ``PREFECT_API_URL`` (a temporary server if the command starts one)
unless noted. Prints one JSON object: seconds per command and the load average before the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PXFLOW_SHARED_DIR", HERE.parent / "shared")).resolve()
IMAGES = SHARED / "data" / "coco_val_mini" / "images"
GT = SHARED / "data" / "coco_val_mini" / "instances_val2017.json"
MODEL = SHARED / "models" / "PicoDet-XS_coco_onnx"
EMBEDDING = SHARED / "models" / "MobileNetV1_embedding_coral"
GALLERY = SHARED / "data" / "drink_dataset_v1.0" / "gallery"

BARE = """
import sys
from pxflow import create_pipeline
pipe = create_pipeline(pipeline="object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": sys.argv[1]}}})
for _ in pipe.predict(sys.argv[2:]):
    pass
"""


def timed(cmd: list[str], code: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return round(seconds, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", default=str(HERE), help="checkout to time")
    args = parser.parse_args()
    code = Path(args.code).resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    env.update(PYTHONPATH=str(code), PREFECT_HOME=str(work / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cli = [sys.executable, "-m", "pxflow.flows"]
    src = work / "in"
    src.mkdir()
    for path in sorted(IMAGES.iterdir())[:10]:
        (src / path.name).symlink_to(path)
    out = work / "out"
    annotate = [*cli, "annotate", "--input", str(src), "--output", str(out), "--model-dir", str(MODEL), "--no-progress"]
    labels = work / "labels.txt"
    labels.write_text("".join((GALLERY / "drink_label.txt").read_text(encoding="utf-8").splitlines(True)[:6]), encoding="utf-8")
    index = ["--root", str(work / "idx"), "--name", "drinks"]

    result: dict[str, float | str] = {"code": str(code), "loadavg_1m_before": round(os.getloadavg()[0], 2)}
    result["bare_predict_10"] = timed([sys.executable, "-c", BARE, str(MODEL), *map(str, sorted(src.iterdir()))], code, env)
    result["annotate_10_temporary_server"] = timed(annotate, code, env)
    result["annotate_rerun_nothing_new"] = timed(annotate, code, env)
    result["eval"] = timed([*cli, "eval", "--output", str(out), "--gt", str(GT)], code, env)
    result["lake_vacuum_nothing_to_delete"] = timed([*cli, "lake", "vacuum", "--output", str(out)], code, env)
    timed([*cli, "index", "build", *index, "--gallery", str(labels), "--gallery_root", str(GALLERY),
           "--rec_model_dir", str(EMBEDDING), "--index_type", "Flat"], code, env)
    result["index_gc_nothing_to_delete"] = timed([*cli, "index", "gc", *index], code, env)

    sys.path.insert(0, str(code))
    from pxflow.flows.cli.server import start_temporary_server

    server = start_temporary_server()  # a running server: the scheduled case
    try:
        running = {**env, "PREFECT_API_URL": server.api_url}
        out2 = work / "out2"
        again = [*cli, "annotate", "--input", str(src), "--output", str(out2), "--model-dir", str(MODEL), "--no-progress"]
        result["annotate_10_running_server"] = timed(again, code, running)
        result["annotate_rerun_running_server"] = timed(again, code, running)
    finally:
        server.stop()
    result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
