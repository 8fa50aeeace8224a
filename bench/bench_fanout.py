"""Fan-out benchmarks (issue 12): what each mode costs per shard, and how it scales with workers.

The model is ``bench/sleep_pipeline.py``: it sleeps ``--sleep-ms`` per image (no core used), inputs are tiny PNGs
(decoding is negligible), so the figures measure orchestration (Prefect task runs, shipping the job and the
summary, the shard's table checks) rather than this machine's cores.

1. Per-shard orchestration overhead, at the default shard size, concurrency 1: two runs of ``N1`` and ``N2``
   shards (after one warm-up run), each into a fresh output, so every shard makes the real "already committed?"
   check of an incremental run and none is skipped; the extra wall time per extra shard minus the shard's own
   time (``seconds`` in its summary: inference + commits) is the overhead, reported as a share of the shard's time. Start-up costs (a Dask cluster, Ray)
   cancel out in the difference. Target: <= 1 % for thread and dask.
2. Scaling efficiency with 1, 2, 4, 8 workers: runs of ``w`` and ``3 w`` shards on ``w`` workers; the wall time
   per extra round (``(t(3w) - t(w)) / 2``) against one shard's time. 1.0 is perfect. The sleep uses no core,
   but each image still costs pxflow's per-input Python work (listing, reading, decoding, row building): with
   ``thread`` all of it shares one interpreter (the GIL), with ``dask`` it spreads over the worker processes.

    python bench/bench_fanout.py [--modes thread,process,dask,ray] [--sleep-ms 10] [--shard-size 500]
                                 [--workers 1,2,4,8] [--scaling-modes thread,dask] [--json out.json]

The ``deployment`` mode is not timed here: each group is a flow run in a fresh process started by a worker
(seconds of interpreter and model start per group, amortised over ``shards_per_group`` shards).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PXFLOW_WORKER_IMPORTS"] = "bench.sleep_pipeline"


def make_inputs(directory: Path, count: int) -> None:
    import cv2
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    source = directory.parent / "tiny.png"
    cv2.imwrite(str(source), np.full((8, 8, 3), 127, np.uint8))
    for i in range(count):
        (directory / f"img_{i:06d}.png").symlink_to(source)


def run(mode: str, inputs: Path, config: str, model_dir: str, shards: int, shard_size: int, workers: int,
        out_root: Path) -> tuple[float, list[dict]]:
    """Wall seconds of one planned+fanned-out run over ``shards`` shards, and the shards' summaries."""
    from pxflow.flows.annotate import job_for, run_shards
    from pxflow.flows.options import AnnotateOptions
    from pxflow.flows.runners import make_task_runner

    sub = inputs / f"n{shards * shard_size}"
    if not sub.exists():
        sub.mkdir()
        for i, path in enumerate(sorted(p for p in inputs.iterdir() if p.is_file())):
            if i >= shards * shard_size:
                break
            (sub / path.name).symlink_to(path.resolve())
    options = AnnotateOptions(pipeline=config, model_dir=model_dir, shard_size=shard_size, concurrency=workers,
                              runner=mode)
    out = tempfile.mkdtemp(dir=out_root)
    job = replace(job_for(out, options), flow_run_id=f"bench-{mode}-{workers}-{shards}")
    runner = make_task_runner(mode, workers)
    started = time.perf_counter()
    outcome = run_shards.with_options(task_runner=runner)(job, str(sub), shard_size, max(2, 2 * workers), True,
                                                          None, mode)
    wall = time.perf_counter() - started
    assert not outcome["failures"], outcome["failures"]
    summaries = outcome["summaries"]
    assert len(summaries) == shards and not any(s["skipped"] for s in summaries), (len(summaries), shards)
    return wall, summaries


def idle_gaps(summaries: list[dict]) -> list[float]:
    """Seconds one worker sat between the end of a shard's work and the start of the next one's
    (concurrency 1): returning the shard, Prefect finishing its task run and starting the next,
    and the next shard's "already committed?" check."""
    ordered = sorted(summaries, key=lambda s: s["started_at"])
    return [b["started_at"] - a["finished_at"] for a, b in zip(ordered, ordered[1:])]


def busy_share(summaries: list[dict], workers: int) -> float:
    """Shard work over ``workers`` x the span from the first shard's start to the last one's end."""
    span = max(s["finished_at"] for s in summaries) - min(s["started_at"] for s in summaries)
    return sum(s["seconds"] for s in summaries) / (workers * span)


def main() -> None:
    from pxflow.tasks.shards import DEFAULT_SHARD_SIZE

    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default="thread,process,dask" + (",ray" if importlib.util.find_spec("prefect_ray") else ""))
    ap.add_argument("--scaling-modes", default="thread,dask")
    ap.add_argument("--sleep-ms", type=float, default=10.0)
    ap.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    ap.add_argument("--overhead-shards", default="1,9", help="N1,N2 shards of the overhead runs")
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import bench.sleep_pipeline as sleep
    from pxflow.flows.cli.annotate import prefect_api
    from tests.support.toy_classifier.model import build

    n1, n2 = (int(x) for x in args.overhead_shards.split(","))
    counts = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_fanout_"))
    model_dir = build(str(work / "toy_model"))
    config = sleep.write_config(str(work / "sleep.yaml"), model_dir, args.sleep_ms)
    inputs = work / "images"
    make_inputs(inputs, max(n2, 3 * max(counts)) * args.shard_size)
    out_root = work / "out"
    out_root.mkdir()
    load = os.getloadavg()
    report: dict = {"sleep_ms": args.sleep_ms, "shard_size": args.shard_size, "cpus": os.cpu_count(),
                    "loadavg_before": [round(x, 2) for x in load], "overhead": {}, "scaling": {}}
    with prefect_api():
        run("thread", inputs, config, model_dir, 1, args.shard_size, 1, out_root)  # warm-up: imports, first flow run
        for mode in [m for m in args.modes.split(",") if m]:
            w1, s1 = run(mode, inputs, config, model_dir, n1, args.shard_size, 1, out_root)
            w2, s2 = run(mode, inputs, config, model_dir, n2, args.shard_size, 1, out_root)
            shard_s = statistics.median(s["seconds"] for s in s2)
            gaps = idle_gaps(s2)
            per_shard = (w2 - w1) / (n2 - n1)
            report["overhead"][mode] = {
                "shard_seconds": round(shard_s, 3),
                "gap_ms_median": round(1000 * statistics.median(gaps), 1),
                "gap_ms_max": round(1000 * max(gaps), 1),
                "gap_share_pct": round(100 * statistics.median(gaps) / shard_s, 2),
                "wall_diff_ms": round(1000 * (per_shard - statistics.mean(s["seconds"] for s in s2)), 1),
                "runs_wall": [round(w1, 2), round(w2, 2)],
            }
            print(mode, report["overhead"][mode], flush=True)
        for mode in [m for m in args.scaling_modes.split(",") if m]:
            rows = {}
            for w in counts:
                wall, summaries = run(mode, inputs, config, model_dir, 3 * w, args.shard_size, w, out_root)
                rows[w] = {"shard_seconds": round(statistics.median(s["seconds"] for s in summaries), 3),
                           "efficiency": round(busy_share(summaries, w), 3),
                           "throughput_img_s": round(3 * w * args.shard_size / wall, 1),
                           "wall": round(wall, 2)}
                print(mode, w, rows[w], flush=True)
            report["scaling"][mode] = rows
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
