"""Fan-out benchmarks (issue 12): what each mode costs per shard, and how it scales with workers.

The model is ``bench/sleep_pipeline.py``: it sleeps ``--sleep-ms`` per image (no core used), inputs are tiny PNGs
(decoding is negligible), so the figures measure orchestration (Prefect task runs, shipping the job and the
summary, the shard's table checks) rather than this machine's cores.

1. Per-shard orchestration overhead, at the default shard size, concurrency 1 (one worker): after one warm-up
   run, a run of ``N2`` shards into a fresh output (so every shard makes the real "already committed?" check of an
   incremental run and none is skipped). The overhead is the worker's **idle gap** between one shard's work and the
   next one's (each shard summary carries the wall-clock window of its work, ``started_at``/``finished_at``): what
   returning a shard, Prefect finishing its task run and starting the next, and the next shard's check cost. The
   median gap is reported as a share of the shard's time (``seconds``: inference + commits). Target: <= 1 % for
   thread and dask. The older figure, the extra wall time per extra shard between runs of ``N1`` and ``N2`` shards,
   is printed beside it (``wall_diff_ms``): it includes nothing the gap misses but swings by +-100 ms per shard
   between runs (flow start and end, a cluster's start-up), so it cannot resolve 1 %.
2. Scaling efficiency with 1, 2, 4, 8 workers: a run of ``3 w`` shards on ``w`` workers (``dask``: on a local
   cluster already started and warmed by a run of ``w`` shards, as a long-lived cluster would be); efficiency = the
   shards' work over ``w`` x the span from the first shard's start to the last one's end. 1.0 is perfect. The sleep
   uses no core, but each image still costs pxflow's per-input Python work (listing, reading, decoding, row
   building): with ``thread`` all of it shares one interpreter (the GIL), with ``dask`` it spreads over the worker
   processes, and on 2 cores 8 workers' per-image work competes for them.

    python bench/bench_fanout.py [--modes thread,process,dask,ray] [--sleep-ms 10] [--shard-size 500]
                                 [--workers 1,2,4,8] [--scaling-modes thread,dask] [--json out.json] [--timeline] [--real-model]

``--real-model`` runs the same measurements with the shared PicoDet-XS (ONNX) on COCO images instead of the
sleep model: the share at a real shard's time on this machine.

The ``deployment`` mode is not timed here: each group is a flow run in a fresh process started by a worker
(seconds of interpreter and model start per group, amortised over ``shards_per_group`` shards).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PXFLOW_WORKER_IMPORTS"] = "bench.sleep_pipeline"


def make_inputs(directory: Path, count: int, sources: list[Path] | None = None) -> None:
    """``count`` inputs: links to ``sources`` in turn (real images), or to one tiny PNG."""
    import cv2
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    if not sources:
        tiny = directory.parent / "tiny.png"
        cv2.imwrite(str(tiny), np.full((8, 8, 3), 127, np.uint8))
        sources = [tiny]
    for i in range(count):
        source = sources[i % len(sources)]
        (directory / f"img_{i:06d}{source.suffix}").symlink_to(source)


def run(mode: str, inputs: Path, config: str, model_dir: str, shards: int, shard_size: int, workers: int,
        out_root: Path, address: str | None = None) -> tuple[float, list[dict]]:
    """Wall seconds of one planned+fanned-out run over ``shards`` shards, and the shards' summaries."""
    from prefect import flow

    from pxflow.flows.annotate import job_for
    from pxflow.flows.annotate_run import stream_shards
    from pxflow.flows.options import AnnotateOptions
    from pxflow.flows.runners import get_runner

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
    runner = get_runner(mode).task_runner(workers, address)
    started = time.perf_counter()

    @flow(name="bench-fanout", validate_parameters=False)
    def shards_flow() -> dict:  # what the annotate flow does with its shards: the runner's task runner, entered
        with runner as task_runner:
            return stream_shards(job, str(sub), shard_size, max(2, 2 * workers), True, None, mode,
                                 task_runner=task_runner)

    outcome = shards_flow()
    wall = time.perf_counter() - started
    assert not outcome["failures"], outcome["failures"]
    summaries = outcome["summaries"]
    assert len(summaries) == shards and not any(s.skipped for s in summaries), (len(summaries), shards)
    return wall, summaries


@contextlib.contextmanager
def warm_workers(mode: str, workers: int):
    """For ``dask``: a local cluster of ``workers`` processes started (and stopped) here, so the measured run
    finds them up and warm, as on a long-lived cluster (its start-up is not orchestration); None otherwise."""
    if mode != "dask":
        yield None
        return
    from distributed import LocalCluster

    from pxflow.flows import runners

    with LocalCluster(**runners.local_cluster_kwargs(workers)) as cluster:
        yield cluster.scheduler_address


def idle_gaps(summaries: list[Any]) -> list[float]:
    """Seconds one worker sat between the end of a shard's work and the start of the next one's
    (concurrency 1): returning the shard, Prefect finishing its task run and starting the next,
    and the next shard's "already committed?" check."""
    ordered = sorted(summaries, key=lambda s: s.started_at)
    return [b.started_at - a.finished_at for a, b in zip(ordered, ordered[1:])]


def busy_share(summaries: list[Any], workers: int) -> float:
    """Shard work over ``workers`` x the span from the first shard's start to the last one's end."""
    span = max(s.finished_at for s in summaries) - min(s.started_at for s in summaries)
    return sum(s.seconds for s in summaries) / (workers * span)


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
    ap.add_argument("--real-model", action="store_true",
                    help="the shared PicoDet-XS ONNX on COCO images instead of the sleep model (a real shard's time)")
    ap.add_argument("--timeline", action="store_true", help="print each scaling run's shards: worker, start, end")
    args = ap.parse_args()

    import bench.sleep_pipeline as sleep
    from pxflow.flows.cli.server import prefect_api
    from tests.support.toy_classifier.model import build

    n1, n2 = (int(x) for x in args.overhead_shards.split(","))
    counts = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_fanout_"))
    inputs = work / "images"
    if args.real_model:  # the shared PicoDet-XS (ONNX) over COCO images: a real shard's time
        from tests.conftest import COCO_MINI, PICODET_ONNX

        config, model_dir = "object_detection", str(PICODET_ONNX)
        sources = sorted(p for p in (COCO_MINI / "images").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    else:
        model_dir = build(str(work / "toy_model"))
        config, sources = sleep.write_config(str(work / "sleep.yaml"), model_dir, args.sleep_ms), None
    make_inputs(inputs, max(n2, 3 * max(counts)) * args.shard_size, sources)
    out_root = work / "out"
    out_root.mkdir()
    load = os.getloadavg()
    report: dict = {"model": "PicoDet-XS ONNX" if args.real_model else "sleep", "sleep_ms": args.sleep_ms, "shard_size": args.shard_size, "cpus": os.cpu_count(),
                    "loadavg_before": [round(x, 2) for x in load], "overhead": {}, "scaling": {}}
    with prefect_api():
        run("thread", inputs, config, model_dir, 1, args.shard_size, 1, out_root)  # warm-up: imports, first flow run
        for mode in [m for m in args.modes.split(",") if m]:
            w1, s1 = run(mode, inputs, config, model_dir, n1, args.shard_size, 1, out_root)
            w2, s2 = run(mode, inputs, config, model_dir, n2, args.shard_size, 1, out_root)
            shard_s = statistics.median(s.seconds for s in s2)
            gaps = idle_gaps(s2)
            per_shard = (w2 - w1) / (n2 - n1)
            report["overhead"][mode] = {
                "shard_seconds": round(shard_s, 3),
                "gap_ms_median": round(1000 * statistics.median(gaps), 1),
                "gap_ms_max": round(1000 * max(gaps), 1),
                "gap_share_pct": round(100 * statistics.median(gaps) / shard_s, 2),
                "wall_diff_ms": round(1000 * (per_shard - statistics.mean(s.seconds for s in s2)), 1),
                "runs_wall": [round(w1, 2), round(w2, 2)],
            }
            print(mode, report["overhead"][mode], flush=True)
        for mode in [m for m in args.scaling_modes.split(",") if m]:
            rows = {}
            for w in counts:
                with warm_workers(mode, w) as address:
                    if address:  # the workers load the model once, as a long-lived cluster's would have
                        run(mode, inputs, config, model_dir, w, args.shard_size, w, out_root, address)
                    wall, summaries = run(mode, inputs, config, model_dir, 3 * w, args.shard_size, w, out_root, address)
                rows[w] = {"shard_seconds": round(statistics.median(s.seconds for s in summaries), 3),
                           "efficiency": round(busy_share(summaries, w), 3),
                           "throughput_img_s": round(3 * w * args.shard_size / wall, 1),
                           "wall": round(wall, 2)}
                print(mode, w, rows[w], flush=True)
                if args.timeline:
                    t0 = min(x["started_at"] for x in summaries)
                    for x in sorted(summaries, key=lambda x: x["started_at"]):
                        print(f"   worker pid {x.get('pid')}: {x['started_at'] - t0:6.2f} s -> {x['finished_at'] - t0:6.2f} s")
            report["scaling"][mode] = rows
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
