"""Serving benchmark: ``pxflow serve`` /object-detection vs pxflow's own ``predict()`` loop.

    python bench/bench_serve.py                 # ~2-3 minutes on 2 cores
    python bench/bench_serve.py --quick         # one pass per level (checking the script)

Same model (../shared PicoDet-XS ONNX), same images (../shared coco_val_mini, 79 JPEGs),
same process defaults on both sides. Reported:

- ``predict``: requests/s of ``pxflow.create_pipeline(...).predict`` in three loops: all
  paths in one call (its loader threads decode ahead), one call per path, and one call on
  all decoded arrays (decode not timed, the ceiling). "best predict loop" is the fastest
  of the first two (the third skips decoding, which the server must do).
- ``serve``: requests/s and p50/p99 latency at concurrency 1, 4 and 16, with
  ``visualize: false`` (boxes only) and with the default visualisation (a JPEG of the drawn
  boxes in every response). The client is a minimal asyncio HTTP/1.1 client (pre-built
  requests on keep-alive connections) in this process, so it takes as little CPU from the
  server as possible; it still shares the machine.

Each serve level first sends a warm-up round; timings are the best of ``--repeats`` passes.
The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PXFLOW_SHARED_DIR", ROOT.parent / "shared")).resolve()
MODEL = SHARED / "models" / "PicoDet-XS_coco_onnx"
IMAGES = SHARED / "data" / "coco_val_mini" / "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def predict_loops(paths: list[str]):
    import cv2

    from pxflow import create_pipeline

    pipe = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(MODEL)}}})
    list(pipe.predict(paths[:4]))  # warm-up
    arrays = [cv2.imread(p) for p in paths]
    return {
        "predict_all_paths": lambda: sum(len(r["boxes"]) for r in pipe.predict(paths)),
        "predict_per_path": lambda: sum(len(next(pipe.predict(p))["boxes"]) for p in paths),
        "predict_all_arrays_nodecode": lambda: sum(len(r["boxes"]) for r in pipe.predict(arrays)),
    }


def time_predict(fn, n: int) -> dict[str, float]:
    t, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, used = time.perf_counter() - t, time.process_time() - cpu
    return {"rps": n / wall, "cpu_ms_per_image": 1000 * used / n}


class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    async def call(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        await self.writer.drain()
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        return status, await self.reader.readexactly(length)


def build_requests(port: int, paths: list[str], visualize: bool) -> list[bytes]:
    out = []
    for p in paths:
        body = json.dumps({"image": base64.b64encode(Path(p).read_bytes()).decode(), "visualize": visualize}).encode()
        head = (f"POST /object-detection HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        out.append(head + body)
    return out


async def run_level(port: int, requests: list[bytes], concurrency: int, total: int, server_pid: int = 0) -> dict[str, float]:
    conns = [Conn(*await asyncio.open_connection("127.0.0.1", port)) for _ in range(concurrency)]
    latencies: list[float] = []
    counter = iter(range(total))
    failures = 0

    async def worker(conn: Conn):
        nonlocal failures
        for i in counter:
            t = time.perf_counter()
            status, body = await conn.call(requests[i % len(requests)])
            latencies.append(time.perf_counter() - t)
            if status != 200 or b'"errorCode":0' not in body:
                failures += 1

    t0, cpu0 = time.perf_counter(), time.process_time()
    server0 = proc_cpu_s(server_pid) if server_pid else 0.0
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t0
    client_cpu = time.process_time() - cpu0
    server_cpu = (proc_cpu_s(server_pid) - server0) if server_pid else 0.0
    for c in conns:
        c.writer.close()
    latencies.sort()
    return {
        "rps": total / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "failures": failures,
        "server_cpu_ms_per_request": 1000 * server_cpu / total,
        "client_cpu_ms_per_request": 1000 * client_cpu / total,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--server-args", default="", help="extra `pxflow serve` flags, e.g. \"--workers 2 --max-batch 16\"")
    ap.add_argument("--skip-visualize", action="store_true", help="only the visualize=false runs")
    args = ap.parse_args()
    if not MODEL.is_dir():
        print(f"bench_serve: {MODEL} not found", file=sys.stderr)
        return 2
    repeats = 1 if args.quick else args.repeats
    paths = sorted(str(p) for p in IMAGES.iterdir())
    load_before = os.getloadavg()

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "pxflow"), "serve", "--pipeline", "object_detection",
                               "--model-dir", str(MODEL), "--port", str(port), "--log-level", "warning",
                               *args.server_args.split()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))
    results: dict = {"images": len(paths), "cpus": os.cpu_count(), "loadavg_before": load_before,
                     "server_args": args.server_args}
    try:
        import urllib.request

        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2).status == 200:
                    break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("server did not become ready")
                time.sleep(0.3)
        loops = predict_loops(paths)
        levels = [int(v) for v in args.levels.split(",")]
        modes = (False,) if args.skip_visualize else (False, True)
        requests = {v: build_requests(port, paths, v) for v in modes}
        for v in modes:
            for c in levels:
                asyncio.run(run_level(port, requests[v], c, max(8, 2 * c), server.pid))  # warm-up
        total = len(paths) if args.quick else 2 * len(paths)
        jobs = [("predict", name) for name in loops] + [("serve", (v, c)) for v in modes for c in levels]
        best: dict = {}
        for round_ in range(repeats):  # rounds, order rotated: load from elsewhere hits every variant alike
            shift = round_ % len(jobs)
            for kind, what in jobs[shift:] + jobs[:shift]:
                if kind == "predict":
                    r = time_predict(loops[what], len(paths))
                    key = ("predict", what)
                else:
                    r = asyncio.run(run_level(port, requests[what[0]], what[1], total, server.pid))
                    key = ("serve_visualize" if what[0] else "serve", str(what[1]))
                if key not in best or r["rps"] > best[key]["rps"]:
                    best[key] = r
        results["predict"] = {name: best[("predict", name)] for name in loops}
        best_predict = max(results["predict"]["predict_all_paths"]["rps"], results["predict"]["predict_per_path"]["rps"])
        results["best_predict_rps"] = best_predict
        for (tag, c), r in best.items():
            if tag != "predict":
                r["vs_best_predict"] = r["rps"] / best_predict
                results.setdefault(tag, {})[c] = r
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
    results["loadavg_after"] = os.getloadavg()

    print(f"machine: {results['cpus']} CPUs, load average before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}")
    for name, r in results["predict"].items():
        print(f"{name:32s} {r['rps']:7.1f} img/s  cpu {r['cpu_ms_per_image']:5.1f} ms/img")
    print(f"{'best predict loop':32s} {best_predict:7.1f} img/s")
    for tag in ("serve", "serve_visualize"):
        for c, r in results.get(tag, {}).items():
            print(f"{tag + ' c=' + c:32s} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
                  f"{r['vs_best_predict']:.2f}x predict  cpu server {r['server_cpu_ms_per_request']:5.1f} + client "
                  f"{r['client_cpu_ms_per_request']:4.1f} ms/req  failures {r['failures']}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
