"""A/B of checkouts on one running Prefect server: a 10-image ``annotate`` flow run and its rerun (BENCHMARKS.md).

    python bench/bench_flow_run_ab.py DIR_A DIR_B [--rounds 3]

The scheduled case: ``PREFECT_API_URL`` set, so every ``annotate`` is a flow run. Each checkout's CLI
(``python -m pxflow.flows`` with the checkout first on ``PYTHONPATH``) runs in a fresh process, the checkouts
interleaved within each round, each round into new outputs; one server (started from the last checkout) serves
them all. Prints one JSON object: seconds per checkout and kind, every round, and the load average.
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
MODEL = SHARED / "models" / "PicoDet-XS_coco_onnx"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("codes", nargs="+", help="checkouts to compare")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    codes = [str(Path(c).resolve()) for c in args.codes]
    work = Path(tempfile.mkdtemp(prefix="bench-flow-run-"))
    src = work / "in"
    src.mkdir()
    for path in sorted(IMAGES.iterdir())[:10]:
        (src / path.name).symlink_to(path)
    sys.path.insert(0, codes[-1])
    from pxflow.flows.cli.server import start_temporary_server

    result: dict = {"loadavg_1m_before": round(os.getloadavg()[0], 2), **{c: {"new": [], "rerun": []} for c in codes}}
    server = start_temporary_server()
    try:
        for round_ in range(args.rounds):
            for n, code in enumerate(codes):
                env = {**os.environ, "PREFECT_API_URL": server.api_url, "PYTHONPATH": code,
                       "PREFECT_HOME": str(work / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
                argv = [sys.executable, "-m", "pxflow.flows", "annotate", "--input", str(src), "--output",
                        str(work / f"out-{n}-{round_}"), "--model-dir", str(MODEL), "--no-progress"]
                for kind in ("new", "rerun"):
                    start = time.perf_counter()
                    proc = subprocess.run(argv, cwd=code, env=env, capture_output=True, text=True, timeout=900)
                    if proc.returncode != 0:
                        raise SystemExit(f"{code} {kind}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
                    result[code][kind].append(round(time.perf_counter() - start, 2))
    finally:
        server.stop()
    result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
