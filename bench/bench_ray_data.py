"""pxflow against Ray Data on the same images and model (issue 18, item 3), side by side in one process tree.

    python bench/bench_ray_data.py [--images 2000] [--rounds 3] [--ratio-images 1500] [--model-dir DIR]

Variants, each in a fresh child process, run one after the other within a round, rounds interleaved; a
variant's figure is its best round (images/s):

- ``ray_idiomatic``: ``read_binary_files`` -> ``map_batches`` with an actor class (2 actors x 0.5 CPU,
  onnxruntime 1 thread, batches of 16), the way Ray Data's batch-inference guide writes it.
- ``ray_tuned``: the same job tuned for this machine's cores (one actor per core holding 1 CPU each, onnxruntime
  threads = cores / actors, batches of 64, cores x 4 read blocks, one extra logical CPU for the read tasks so
  they are not starved by the actors); ``--tuned-*`` override it.
- ``pxflow_thread`` / ``pxflow_ray``: the ``annotate`` flow (``--runner thread`` / ``--runner ray``) writing its
  Delta tables, on a Prefect server started once by this script (the scheduled case).
- ``pxflow_predict_w1`` / ``_w2``: a ``create_pipeline(...).predict()`` loop with ``infer_workers`` 1 and 2
  ("pxflow's best ``predict()``" is the better of the two).

Every variant is timed from the start of its job to its last row, in its child: the framework's own start-up
(``ray.init`` and the actors, the Prefect flow run, model loads) is included, Python's imports are not. The Ray
jobs decode with pxflow's ``decode_image`` and preprocess/postprocess with pxflow's ``Preprocessor`` /
``filter_by_threshold`` / ``clip_boxes``, so every variant must find the same number of boxes; the script says
so (``same_boxes``) and exits 1 when they differ.

Then the issue 9 ratio at ``--ratio-images``: ``annotate`` warm (model cached) against pxflow's best
``predict()`` (``bench_lake.annotate_warm`` / ``bench_lake.best_predict``), interleaved, best of the rounds.

The 1-minute load average is recorded before and after every child. Images are coco_val_mini's 79 files repeated
under distinct names (``bench_annotate.make_inputs``). Prints one JSON report (and writes it under
``bench/results/`` unless ``--no-save``).
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

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PXFLOW_SHARED_DIR", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_annotate import make_inputs  # noqa: E402

THRESHOLD = 0.5
SIDE_BY_SIDE = ("ray_idiomatic", "ray_tuned", "pxflow_thread", "pxflow_ray", "pxflow_predict_w1", "pxflow_predict_w2")
RATIO = ("ratio_annotate", "ratio_predict")


def cores() -> int:
    return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- the Ray Data job


class Detector:
    """A Ray Data actor: loads the ONNX model once, then decodes, preprocesses, infers and postprocesses a batch
    of files with pxflow's own functions (the rows must be the same as pxflow's)."""

    def __init__(self, model_dir: str, threads: int) -> None:
        import onnxruntime as ort

        from pxflow.pipelines.models import load_model_spec
        from pxflow.pipelines.ops.preprocess import Preprocessor

        spec = load_model_spec(model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(Path(model_dir) / "inference.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.preprocess = Preprocessor.from_config(spec.preprocess)

    def __call__(self, batch: dict) -> dict:
        from pxflow.pipelines.io.images import decode_image
        from pxflow.pipelines.ops.boxes import clip_boxes, filter_by_threshold
        from pxflow.pipelines.ops.preprocess import to_batch

        counts = []
        for path, data in zip(batch["path"], batch["bytes"]):
            image = decode_image(bytes(data), str(path))
            feed = to_batch([self.preprocess(image)])
            boxes = self.session.run(None, {name: feed[name] for name in self.inputs})[0]
            kept = clip_boxes(filter_by_threshold(boxes[:, :6], THRESHOLD), image.shape[1], image.shape[0])
            counts.append(len(kept))
        return {"path": batch["path"], "boxes": counts}


def ray_job(paths: list[str], model_dir: str, actors: int, cpus_per_actor: float, threads: int, batch: int,
            blocks: int | None, logical_cpus: int) -> tuple[int, int, float]:
    """(images, boxes, seconds ray.init took) of one Ray Data job over ``paths``.

    ``logical_cpus``: what Ray may schedule. Actors holding every core leave none for the read tasks (1 CPU
    each), and the job waits forever; the tuned job adds one logical CPU for them (reading is I/O)."""
    import ray
    import ray.data

    start = time.perf_counter()
    ray.init(num_cpus=logical_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    started = time.perf_counter() - start
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        read = ray.data.read_binary_files(paths, include_paths=True, **({"override_num_blocks": blocks} if blocks else {}))
        rows = read.map_batches(Detector, fn_constructor_kwargs={"model_dir": model_dir, "threads": threads},
                                concurrency=actors, num_cpus=cpus_per_actor, batch_size=batch,
                                batch_format="numpy").take_all()
    finally:
        ray.shutdown()
    return len(rows), sum(int(r["boxes"]) for r in rows), started


# ---------------------------------------------------------------- the pxflow jobs


def pxflow_annotate(src: Path, model_dir: str, runner: str) -> tuple[int, int]:
    from pxflow.flows.annotate import annotate
    from pxflow.flows.options import AnnotateOptions

    with tempfile.TemporaryDirectory() as out:
        result = annotate(input=str(src), output=out, options=AnnotateOptions(
            model_dir=model_dir, backend="onnxruntime", threshold=THRESHOLD, runner=runner))
    assert result["complete"], result
    return result["images_inferred"], result["objects_written"]


def pxflow_predict(paths: list[str], model_dir: str, infer_workers: int) -> tuple[int, int]:
    from pxflow import create_pipeline

    pipe = create_pipeline("object_detection", backend="onnxruntime", config={
        "SubModules": {"ObjectDetection": {"model_dir": model_dir}}, "Pxflow": {"infer_workers": infer_workers}})
    images = boxes = 0
    for result in pipe.predict(paths, threshold=THRESHOLD):
        images += 1
        boxes += len(result["boxes"])
    return images, boxes


def child(args: argparse.Namespace) -> None:
    """One variant in this (fresh) process; prints one JSON line."""
    src = Path(args.src)
    paths = sorted(str(p) for p in src.iterdir())
    start = time.perf_counter()
    variant = args.child
    extra: dict = {}
    if variant == "ray_idiomatic":
        images, boxes, extra["ray_init_s"] = ray_job(paths, args.model_dir, actors=2, cpus_per_actor=0.5, threads=1,
                                                     batch=16, blocks=None, logical_cpus=cores())
    elif variant == "ray_tuned":
        actors = args.tuned_actors or cores()
        threads = args.tuned_threads or max(1, cores() // actors)
        extra.update(actors=actors, threads=threads, batch=args.tuned_batch)
        images, boxes, extra["ray_init_s"] = ray_job(paths, args.model_dir, actors=actors,
                                                     cpus_per_actor=cores() / actors, threads=threads,
                                                     batch=args.tuned_batch, blocks=cores() * 4,
                                                     logical_cpus=cores() + 1)
    elif variant in ("pxflow_thread", "pxflow_ray"):
        images, boxes = pxflow_annotate(src, args.model_dir, variant.split("_")[1])
    elif variant.startswith("pxflow_predict_w"):
        images, boxes = pxflow_predict(paths, args.model_dir, int(variant[-1]))
    elif variant in RATIO:
        from bench_lake import annotate_warm, best_predict

        if variant == "ratio_annotate":
            with tempfile.TemporaryDirectory() as out:
                result = annotate_warm(src, Path(out), args.model_dir, "onnxruntime", max(1, len(paths) // 4))
            print(json.dumps({"variant": variant, **result}))
        else:
            print(json.dumps({"variant": variant, **best_predict([Path(p) for p in paths], args.model_dir,
                                                                 "onnxruntime")}))
        return
    else:
        raise SystemExit(f"unknown variant {variant}")
    seconds = time.perf_counter() - start
    print(json.dumps({"variant": variant, "images": images, "boxes": boxes, "seconds": round(seconds, 2),
                      "images_per_s": round(images / seconds, 2), **{k: round(v, 2) if isinstance(v, float) else v
                                                                     for k, v in extra.items()}}))


# ---------------------------------------------------------------- the parent


def run_child(variant: str, src: Path, args: argparse.Namespace, env: dict[str, str]) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--src", str(src), "--model-dir", args.model_dir,
           "--tuned-batch", str(args.tuned_batch)]
    for flag in ("tuned_actors", "tuned_threads"):
        if getattr(args, flag):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{variant}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def subset(src: Path, dst: Path, n: int) -> Path:
    dst.mkdir()
    for path in sorted(src.iterdir())[:n]:
        (dst / path.name).symlink_to(path.resolve())
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ratio-images", type=int, default=1500, help="annotate vs best predict(); 0 skips it")
    p.add_argument("--variants", default=",".join(SIDE_BY_SIDE))
    p.add_argument("--model-dir", default=str(SHARED / "models" / "PicoDet-XS_coco_onnx"))
    p.add_argument("--tuned-actors", type=int, default=None, help="ray_tuned actors (default: one per core)")
    p.add_argument("--tuned-threads", type=int, default=None, help="ray_tuned onnxruntime threads per actor")
    p.add_argument("--tuned-batch", type=int, default=64)
    p.add_argument("--timeout", type=int, default=3600, help="seconds per child")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--src", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    variants = [v for v in args.variants.split(",") if v]
    report: dict = {"cpu_cores": cores(), "images": args.images, "rounds": args.rounds, "threshold": THRESHOLD,
                    "load_1m_start": round(os.getloadavg()[0], 2), "runs": []}
    with prefect_test_harness(server_startup_timeout=180), tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
        src = Path(tmp) / "in"
        make_inputs(src, args.images)
        for _ in range(args.rounds):
            for variant in variants:
                report["runs"].append(run_child(variant, src, args, env))
        if args.ratio_images:
            ratio_src = subset(src, Path(tmp) / "ratio", min(args.ratio_images, args.images))
            for _ in range(args.rounds):
                for variant in RATIO:
                    report["runs"].append(run_child(variant, ratio_src, args, env))
    report["load_1m_end"] = round(os.getloadavg()[0], 2)

    side = [r for r in report["runs"] if r["variant"] in variants]
    best = {v: max(r["images_per_s"] for r in side if r["variant"] == v) for v in variants}
    boxes = {v: sorted({r["boxes"] for r in side if r["variant"] == v}) for v in variants}
    report["best_images_per_s"] = best
    report["boxes"] = boxes
    report["same_boxes"] = len({b for found in boxes.values() for b in found}) == 1
    predict = [v for v in variants if v.startswith("pxflow_predict")]
    if "ray_tuned" in best:
        report["vs_ray_tuned"] = {v: round(best[v] / best["ray_tuned"], 3) for v in variants}
    if predict:
        report["best_predict_images_per_s"] = max(best[v] for v in predict)
    if args.ratio_images:
        annotate_best = max(r["images_per_s"] for r in report["runs"] if r["variant"] == "ratio_annotate")
        predict_best = max(r["best"] for r in report["runs"] if r["variant"] == "ratio_predict")
        report["ratio_at"] = min(args.ratio_images, args.images)
        report["annotate_vs_best_predict"] = round(annotate_best / predict_best, 3)
    print(json.dumps(report, indent=1))
    if not args.no_save:
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / f"ray_data_{int(time.time())}.json").write_text(json.dumps(report, indent=1))
    if not report["same_boxes"]:
        raise SystemExit(f"the variants found different numbers of boxes: {boxes}")


if __name__ == "__main__":
    main()
