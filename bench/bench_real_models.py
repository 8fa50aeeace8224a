"""Real-weight throughput (issue 17): pxflow ``predict`` and ``annotate`` against a raw onnxruntime loop.

    python bench/bench_real_models.py            # 3 interleaved rounds, ~8-10 minutes on 2 busy cores
    python bench/bench_real_models.py --quick    # 1 round, 24 images each (checking the script)

Two real models from ``../shared/models`` (read in place, never copied; YOLOv8n-seg is AGPL-3.0):

- ``YOLOv8n-seg_int8_320_coco`` (instance segmentation) on the 79 ``coco_val_mini`` images:
  ``raw`` (cv2 decode, letterbox exactly as its ``inference.yml`` says, one onnxruntime call per image),
  ``predict`` (``create_pipeline("instance_segmentation")``, threshold 0.5, results consumed: boxes and
  full-frame masks), ``annotate`` (the Prefect flow end to end: listing, shards, Delta rows with mask RLE);
- ``MobileNetV1_embedding_coral`` (1024-d recognition) on the first 400 drink gallery images (a feature
  shard's worth: the flow's fixed cost, one index version published per pass, is then amortised as in use):
  ``raw`` (decode, resize 224, (x-128)/128, one call per image), ``predict`` (the PP-ShiTuV2 pipeline's
  ``embed_gallery``, what ``build_index`` runs), ``annotate`` (the ``index-build`` flow into a fresh root:
  feature shards, the features Delta table, a published index version).

Method: every variant of a model runs once per round, the order rotated each round, in this one process,
after one untimed warm-up pass; each variant's best pass counts. Ratios are ``variant / raw`` of images/s
within the run, the figure that stays meaningful on a machine shared with other work (``uptime`` is
recorded before and after). Raw loops are written longhand so they share no code with pxflow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("PXFLOW_SHARED_DIR", ROOT.parent / "shared")).resolve()
SEG_DIR = SHARED / "models" / "YOLOv8n-seg_int8_320_coco"
REC_DIR = SHARED / "models" / "MobileNetV1_embedding_coral"
COCO = SHARED / "data" / "coco_val_mini" / "images"
GALLERY = SHARED / "data" / "drink_dataset_v1.0" / "gallery"
RESULTS = HERE / "results" / "real_models.json"
sys.path.insert(0, str(ROOT))


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class RawSeg:
    """YOLOv8n-seg: RGB, keep-ratio linear resize to 320, pad 114 bottom-right, /255, CHW; one image per call."""

    def __init__(self, threads: int) -> None:
        self.session = ort_session(SEG_DIR / "inference.onnx", threads)

    def run(self, paths: list[str]) -> int:
        for path in paths:
            rgb = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            scale = min(320 / h, 320 / w)
            nh, nw = int(round(h * scale)), int(round(w * scale))
            canvas = np.full((320, 320, 3), 114.0, np.float32)
            canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
            feed = {
                "image": np.ascontiguousarray((canvas / 255.0).transpose(2, 0, 1)[None], np.float32),
                "im_shape": np.array([[nh, nw]], np.float32),
                "scale_factor": np.array([[nh / h, nw / w]], np.float32),
            }
            self.session.run(None, feed)
        return len(paths)


class RawRec:
    """MobileNetV1: RGB, resize 224x224 bilinear, (x-128)/128, CHW; one image per call, L2-normalised."""

    def __init__(self, threads: int) -> None:
        self.session = ort_session(REC_DIR / "inference.onnx", threads)
        self.name = self.session.get_inputs()[0].name

    def run(self, paths: list[str]) -> int:
        for path in paths:
            rgb = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            x = (cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_LINEAR).astype(np.float32) - 128.0) / 128.0
            feature = self.session.run(None, {self.name: np.ascontiguousarray(x.transpose(2, 0, 1)[None])})[0]
            feature / np.linalg.norm(feature)
        return len(paths)


def seg_predict(threads: int) -> Callable[[list[str]], int]:
    from pxflow.pipelines import create_pipeline

    pipe = create_pipeline(
        "instance_segmentation",
        config={"SubModules": {"InstanceSegmentation": {"model_dir": str(SEG_DIR), "threshold": 0.5}},
                "Pxflow": {"backend": "onnxruntime", "cpu_threads": threads}},
    )

    def run(paths: list[str]) -> int:
        return sum(1 for r in pipe.predict(paths) if r["masks"] is not None)

    return run


def seg_annotate(threads: int, work: Path) -> Callable[[list[str]], int]:
    from pxflow.flows.annotate import annotate
    from pxflow.flows.options import AnnotateOptions

    src = work / "seg_inputs"
    options = AnnotateOptions(pipeline="instance_segmentation", model_dir=str(SEG_DIR), backend="onnxruntime",
                              threshold=0.5, set=[f"Pxflow.cpu_threads={threads}"])
    passes = iter(range(10**6))

    def run(paths: list[str]) -> int:
        link_inputs(src, paths)
        result = annotate(input=str(src), output=str(work / f"seg_out{next(passes)}"), options=options)
        assert result["complete"], result
        return int(result["rows_images"])

    return run


def rec_predict(threads: int) -> Callable[[list[str]], int]:
    from pxflow.pipelines.predictors.image_feature import FeaturePredictor
    from pxflow.pipelines.pp_shitu_v2.gallery import embed_gallery

    model = FeaturePredictor(model_dir=str(REC_DIR), backend="onnxruntime", cpu_threads=threads)

    def run(paths: list[str]) -> int:
        features, _, skipped = embed_gallery(model, paths, ["x"] * len(paths))
        assert not skipped
        return len(features)

    return run


def rec_annotate(threads: int, work: Path) -> Callable[[list[str]], int]:
    from pxflow.flows.index import index_build
    from pxflow.flows.options import FeatureOptions

    options = FeatureOptions(rec_model_dir=str(REC_DIR), backend="onnxruntime")
    passes = iter(range(10**6))

    def run(paths: list[str]) -> int:
        labels = work / "gallery.txt"
        labels.write_text("".join(f"{p}\tl{i % 7}\n" for i, p in enumerate(paths)), encoding="utf-8")
        result = index_build(root=str(work / f"idx{next(passes)}"), name="bench", gallery=str(labels),
                             index_type="Flat", features=options)
        assert result["features_computed"] == len(paths), result
        return len(paths)

    return run


def link_inputs(directory: Path, paths: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for p in paths:
        link = directory / Path(p).name
        if not link.exists():
            link.symlink_to(p)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def measure(variants: dict[str, Callable[[list[str]], int]], paths: list[str], rounds: int) -> dict[str, dict]:
    for run in variants.values():  # warm-up: model load, first-call allocations, Prefect's ephemeral API
        run(paths[:4])
    best: dict[str, float] = {}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            n = variants[name](paths)
            seconds = time.perf_counter() - start
            assert n == len(paths), (name, n)
            best[name] = min(best.get(name, float("inf")), seconds)
            print(f"  round {r + 1} {name:8s} {len(paths) / seconds:7.2f} images/s", flush=True)
    raw = len(paths) / best["raw"]
    return {name: {"images_per_s": round(len(paths) / s, 2), "vs_raw": round(len(paths) / s / raw, 3)} for name, s in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=79, help="COCO images (YOLOv8n-seg)")
    parser.add_argument("--gallery-images", type=int, default=400, help="drink gallery images (MobileNetV1)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every variant")
    parser.add_argument("--quick", action="store_true", help="1 round, 24 images")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.images, args.gallery_images = 1, 24, 24
    for path in (SEG_DIR, REC_DIR, COCO, GALLERY):
        if not path.exists():
            sys.exit(f"bench_real_models: {path} not found (../shared is needed)")
    coco = sorted(str(p) for p in COCO.iterdir() if p.suffix == ".jpg")[: args.images]
    gallery = sorted(str(p) for p in GALLERY.glob("*/*.jpg"))[: args.gallery_images]
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "uptime_before": uptime()},
              "images": {"coco": args.images, "gallery": args.gallery_images}, "rounds": args.rounds, "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="pxflow-bench-real-") as tmp:
        work = Path(tmp)
        print(f"YOLOv8n-seg on {len(coco)} COCO images", flush=True)
        report["yolov8n_seg"] = measure(
            {"raw": RawSeg(args.threads).run, "predict": seg_predict(args.threads), "annotate": seg_annotate(args.threads, work)},
            coco, args.rounds)
        print(f"MobileNetV1 on {len(gallery)} gallery images", flush=True)
        report["mobilenetv1"] = measure(
            {"raw": RawRec(args.threads).run, "predict": rec_predict(args.threads), "annotate": rec_annotate(args.threads, work)},
            gallery, args.rounds)
    report["machine"]["uptime_after"] = uptime()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
