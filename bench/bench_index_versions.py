"""Versioned-index benchmarks (issue 10), ratios measured within one run.

1. On N x 512 random unit vectors (IVF at default settings): append 1k / remove 1k as today's
   in-place folder update (load, change, save over the folder) and as a new *published version*
   (``IndexRepo``: load CURRENT, change, write the version, validate it, compare-and-swap CURRENT) on
   the local S3 server (``weed mini``). Target: versioned < 2x in-place.
2. Feature extraction: the sharded ``index-features`` flow (thread runner) against the recognition
   model's raw loop (read, decode, preprocess, infer at the flow's batch) on the drink gallery with the
   generated PP-ShiTu rec model. Target >= 0.95x.

    python bench/bench_index_versions.py [--n 100000] [--gallery 988]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("PXFLOW_SHARED_DIR", ROOT.parent / "shared"))
DRINK = SHARED / "data" / "drink_dataset_v1.0"
DIM, CHANGE = 512, 1000


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def index_updates(n: int, server) -> dict:
    from pxflow.pipelines.io.storage import Storage
    from pxflow.pipelines.retrieval import IndexData, append_index, build_index, remove_index
    from pxflow.pipelines.retrieval.versions import IndexRepo

    x, extra = unit(n, 0), unit(CHANGE, 1)
    labels = [str(i % 1000) for i in range(n)]
    t = time.perf_counter()
    data = build_index(x, labels, "IVF", "IP")
    build_s = time.perf_counter() - t
    out: dict = {"n": n, "build_s": round(build_s, 2), "structure": data.meta.structure}
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "idx")
        data.save(folder)
        t = time.perf_counter()
        appended = append_index(extra, ["new"] * CHANGE, IndexData.load(folder))
        appended.save(folder)
        out["inplace_append_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        removed = remove_index([], IndexData.load(folder), labels=["new"])
        removed.save(folder)
        out["inplace_remove_s"] = round(time.perf_counter() - t, 3)

    storage = Storage()
    repo = IndexRepo(server.unique_prefix("bench-index"), "vectors", storage)
    entries = [{"uri": f"g/{i}.jpg", "etag": "e"} for i in range(n)]
    repo.build(x, labels, entries, index_type="IVF", metric_type="IP")
    t = time.perf_counter()
    repo.append(extra, ["new"] * CHANGE, [{"uri": f"n/{i}.jpg", "etag": "e"} for i in range(CHANGE)])
    out["versioned_append_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    repo.remove(labels=["new"])
    out["versioned_remove_s"] = round(time.perf_counter() - t, 3)
    out["append_ratio"] = round(out["versioned_append_s"] / out["inplace_append_s"], 3)
    out["remove_ratio"] = round(out["versioned_remove_s"] / out["inplace_remove_s"], 3)
    return out


def features(count: int) -> dict:
    from prefect.testing.utilities import prefect_test_harness

    from pxflow.flows.index import compute_features
    from pxflow.pipelines.io.storage import Storage
    from pxflow.pipelines.retrieval.gallery import load_gallery
    from pxflow.tasks.features import feature_model
    from tests.support.shitu_models import build_models

    rec = build_models()["rec"]
    sources, _ = load_gallery(str(DRINK / "gallery" / "drink_label.txt"), str(DRINK / "gallery"))
    sources = sources[:count]
    model = feature_model(rec_model_dir=rec)
    import cv2

    t = time.perf_counter()
    batch = []
    for path in sources:
        image = cv2.imdecode(np.frombuffer(Path(path).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        batch.append(model.preprocess(image))
        if len(batch) == 8:
            model.infer(batch, batch_size=8)
            batch = []
    if batch:
        model.infer(batch, batch_size=8)
    raw_s = time.perf_counter() - t
    storage = Storage()
    entries = [{"uri": s, "etag": storage.stat(s).etag, "label": "x"} for s in sources]
    with prefect_test_harness(server_startup_timeout=180), tempfile.TemporaryDirectory() as tmp:
        spec = {"pipeline": "PP-ShiTuV2", "rec_model_dir": rec, "backend": None, "device": None}
        compute_features(entries[:8], os.path.join(tmp, "warm"), spec, None, 500)  # model load, first flow
        t = time.perf_counter()
        result = compute_features(entries, os.path.join(tmp, "lake"), spec, None, 250)
        flow_s = time.perf_counter() - t
    assert result["computed"] == len(entries), result
    return {"images": len(entries), "raw_loop_img_s": round(len(entries) / raw_s, 2),
            "flow_img_s": round(len(entries) / flow_s, 2), "ratio": round(raw_s / flow_s, 3)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--gallery", type=int, default=988)
    args = p.parse_args()
    from tests.support.s3_server import running_s3_server

    report: dict = {"cpu_cores": len(os.sched_getaffinity(0)), "load_avg_1m": os.getloadavg()[0]}
    with running_s3_server() as server:
        report["index_updates"] = index_updates(args.n, server)
        print(json.dumps(report["index_updates"]), flush=True)
    report["features"] = features(args.gallery)
    report["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
