"""Bulk annotation benchmarks (issue 5), each a ratio measured within one run.

1. Prefect per-task overhead: no-op tasks on the thread runner (this sets the default shard size).
2. Throughput: ``annotate`` end to end (listing, shards, Prefect tasks, Parquet, commit markers)
   against the raw model loop on the same images, model and backend (read + decode + preprocess +
   infer, one image at a time, no framework). Reported warm (model already in the process cache,
   as for every shard after a worker's first) and cold (including the model load).
3. Peak RSS: ``annotate`` over N and 10x N images in fresh processes (memory must not grow with the
   input size: only a shard's rows are held).

    python bench/bench_annotate.py [--images 316] [--rss-images 79] [--model-dir DIR] [--backend onnxruntime]

Images are the coco_val_mini files, repeated under distinct names to reach the requested count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("PXFLOW_SHARED_DIR", ROOT.parent / "shared"))
COCO = SHARED / "data" / "coco_val_mini" / "images"


def make_inputs(directory: Path, count: int) -> list[Path]:
    """``count`` image files (the COCO files repeated under new names), each its own file: hard links, or copies
    across filesystems. Not symlinks: ``annotate`` identifies an input by its real path, so N symlinks to 79
    files would be 79 inputs (planned once each) while ``predict()`` reads all N."""
    sources = sorted(COCO.iterdir())
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        dst = directory / f"{i:06d}_{src.name}"
        if not dst.exists():
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        out.append(dst)
    return out


def prefect_overhead(n: int = 200) -> dict:
    from prefect import flow, task

    @task
    def noop(i: int) -> int:
        return i

    @flow
    def many(count: int) -> float:
        start = time.perf_counter()
        futures = [noop.submit(i) for i in range(count)]
        for f in futures:
            f.result()
        return time.perf_counter() - start

    many(10)  # warm-up
    seconds = many(n)
    return {"tasks": n, "ms_per_task": round(seconds / n * 1e3, 2)}


def raw_loop(paths: list[Path], model_dir: str, backend: str) -> dict:
    """What a hand-written loop does: read, decode, preprocess, infer; one image at a time."""
    import cv2
    import numpy as np

    from pxflow.pipelines.models import create_backend, load_model_spec
    from pxflow.pipelines.ops.preprocess import Preprocessor, to_batch

    spec = load_model_spec(model_dir)
    model = create_backend(spec, backend=backend)
    pre = Preprocessor.from_config(spec.preprocess)
    start = time.perf_counter()
    for path in paths:
        image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        model.run(to_batch([pre(image)]))
    seconds = time.perf_counter() - start
    return {"images": len(paths), "seconds": round(seconds, 3), "images_per_s": round(len(paths) / seconds, 2)}


def run_annotate(src: Path, out: Path, model_dir: str, backend: str, shard_size: int, concurrency: int) -> dict:
    from pxflow.flows.annotate import annotate
    from pxflow.flows.options import AnnotateOptions

    start = time.perf_counter()
    options = AnnotateOptions(model_dir=model_dir, backend=backend, threshold=0.5, shard_size=shard_size, concurrency=concurrency)
    result = annotate(input=str(src), output=str(out), options=options)
    seconds = time.perf_counter() - start
    assert result["complete"], result
    return {"images": result["rows_images"], "seconds": round(seconds, 3),
            "images_per_s": round(result["rows_images"] / seconds, 2), "shards": result["shards_planned"]}


def rss_child(args: argparse.Namespace) -> None:
    """In a fresh process: annotate ``--rss-child`` images and print the peak RSS (MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        make_inputs(src, args.rss_child)
        result = run_annotate(src, Path(tmp) / "out", args.model_dir, args.backend, args.rss_shard_size, 1)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**result, "peak_rss_mib": round(peak_mib, 1)}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=316)
    p.add_argument("--rss-images", type=int, default=79)
    p.add_argument("--rss-shard-size", type=int, default=40)
    p.add_argument("--shard-size", type=int, default=None, help="default: a quarter of --images (4 shards)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    p.add_argument("--model-dir", default=str(SHARED / "models" / "PicoDet-XS_coco_onnx"))
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--skip-rss", action="store_true")
    args = p.parse_args()
    if args.rss_child:
        return rss_child(args)

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    report: dict = {"cpu_cores": len(os.sched_getaffinity(0)), "load_avg_1m": os.getloadavg()[0]}
    with prefect_test_harness(server_startup_timeout=180), tempfile.TemporaryDirectory() as tmp:
        report["prefect_overhead"] = prefect_overhead()
        print(json.dumps(report["prefect_overhead"]), flush=True)
        src = Path(tmp) / "in"
        paths = make_inputs(src, args.images)
        shard_size = args.shard_size or max(1, args.images // 4)
        cold = run_annotate(src, Path(tmp) / "cold", args.model_dir, args.backend, shard_size, 1)
        raw = raw_loop(paths, args.model_dir, args.backend)
        report["raw_loop"] = raw
        report["annotate_cold_incl_model_load"] = {**cold, "ratio_vs_raw": round(cold["images_per_s"] / raw["images_per_s"], 3)}
        for concurrency in args.concurrency:
            warm = run_annotate(src, Path(tmp) / f"warm{concurrency}", args.model_dir, args.backend, shard_size, concurrency)
            report[f"annotate_warm_concurrency{concurrency}"] = {
                **warm, "ratio_vs_raw": round(warm["images_per_s"] / raw["images_per_s"], 3)}
            print(json.dumps(report[f"annotate_warm_concurrency{concurrency}"]), flush=True)
        raw2 = raw_loop(paths, args.model_dir, args.backend)  # again: load drifts on a shared machine
        report["raw_loop_again"] = raw2

        if not args.skip_rss:
            env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
            sizes = {}
            for n in (args.rss_images, 10 * args.rss_images):
                cmd = [sys.executable, __file__, "--rss-child", str(n), "--rss-shard-size", str(args.rss_shard_size),
                       "--model-dir", args.model_dir, "--backend", args.backend]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                sizes[n] = json.loads(out.strip().splitlines()[-1])
            small, large = sizes[args.rss_images], sizes[10 * args.rss_images]
            report["peak_rss"] = {"small": small, "large_10x": large,
                                  "ratio_10x": round(large["peak_rss_mib"] / small["peak_rss_mib"], 3)}
    report["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
