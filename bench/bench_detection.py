"""Detection benchmark (issue 2): pxflow vs PaddleX 3.7.2 vs the raw model loop, in one run.

    python bench/bench_detection.py              # timings + box parity, ~6-9 minutes on 2 busy cores
    python bench/bench_detection.py --quick      # 1 repeat, fewer variants (checking the script)
    python bench/bench_detection.py --no-parity  # timings only

What it measures, on ``../shared/data/coco_val_mini/images`` (79 images) with
the shared PicoDet-XS:

- ``raw``: decode with cv2, preprocess exactly as ``inference.yml`` says,
  infer, in a plain for loop on one backend (no framework, no threads of ours);
- ``paddlex``: PaddleX 3.7.2 ``create_pipeline(config=...)`` at its defaults and
  at better settings (``engine="onnxruntime"``, threads, batch size), run in its
  own venv (``bench/setup_paddlex.sh``) by ``bench/paddlex_runner.py``;
- ``pxflow``: ``pipelines.create_pipeline`` at its defaults and at better settings.

Every framework gets the same model directory: a folder under ``bench/.cache``
linking the shared Paddle files *and* the ONNX file, the layout an exported
model has when both are present. There PaddleX's defaults pick Paddle
Inference, and pxflow's ``auto`` picks ONNX Runtime.

Method: each timed pass first warms up on a few images, then times the full
79-image pass (read + decode + preprocess + infer + postprocess, results
consumed). All variants run in rounds, the order rotated each round, and each
variant's best pass counts (best of ``--repeats``). "Best" settings for a
framework are the fastest of its candidate variants in this run. PaddleX runs
in a long-lived subprocess so its passes interleave with ours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("PXFLOW_SHARED_DIR", ROOT.parent / "shared")).resolve()
PADDLE_DIR = SHARED / "models" / "PicoDet-XS_coco_infer"
ONNX_DIR = SHARED / "models" / "PicoDet-XS_coco_onnx"
IMAGES_DIR = SHARED / "data" / "coco_val_mini" / "images"
MODEL_NAME = "PicoDet-XS"
DEFAULT_VENV = HERE / ".venvs" / "paddlex"
RESULTS = HERE / "results" / "detection.json"

sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------------------------
# the model directory every framework gets
# ---------------------------------------------------------------------------------------------
def combined_model_dir() -> Path:
    """Paddle files + ONNX file + inference.yml in one folder (symlinks; shared/ is read-only)."""
    target = HERE / ".cache" / "PicoDet-XS_paddle_onnx"
    target.mkdir(parents=True, exist_ok=True)
    links = {p.name: p for p in PADDLE_DIR.iterdir() if p.is_file()}
    links["inference.onnx"] = ONNX_DIR / "inference.onnx"
    for name, source in links.items():
        link = target / name
        if not link.exists():
            link.symlink_to(source)
    return target


def list_images() -> list[str]:
    return sorted(str(p) for p in IMAGES_DIR.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


# ---------------------------------------------------------------------------------------------
# the raw model loop
# ---------------------------------------------------------------------------------------------
class RawLoop:
    """cv2 decode + ``inference.yml`` preprocessing + one backend, in a plain for loop.

    Written out longhand on purpose (PaddleX's order: RGB, resize, normalise,
    CHW) so it shares no code with pxflow: it is the yardstick.
    """

    def __init__(self, backend: str, threads: int = 2, batch_size: int = 1) -> None:
        self.batch_size = batch_size  # Paddle only: the ONNX graph takes one image per call
        with open(PADDLE_DIR / "inference.yml", encoding="utf-8") as f:
            ops = {op["type"]: op for op in yaml.safe_load(f)["Preprocess"]}
        self.target_h, self.target_w = ops["Resize"]["target_size"]
        self.interp = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR, 2: cv2.INTER_CUBIC}[ops["Resize"]["interp"]]
        norm = ops["NormalizeImage"]
        self.scale = np.float32(1 / 255.0 if norm.get("is_scale", True) else 1.0)
        self.mean = np.asarray(norm["mean"], np.float32)
        self.std = np.asarray(norm["std"], np.float32)
        self.backend = backend
        if backend == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(ONNX_DIR / "inference.onnx"), opts, providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in self.session.get_inputs()]
        else:
            import paddle.inference as pi

            config = pi.Config(str(PADDLE_DIR / "inference.json"), str(PADDLE_DIR / "inference.pdiparams"))
            config.disable_gpu()
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(10)
            config.set_cpu_math_library_num_threads(threads)
            config.switch_ir_optim(True)
            config.disable_glog_info()
            self.predictor = pi.create_predictor(config)
            self.input_names = list(self.predictor.get_input_names())

    def preprocess(self, path: str) -> dict[str, np.ndarray]:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        resized = cv2.resize(rgb, (self.target_w, self.target_h), interpolation=self.interp)
        chw = ((resized.astype(np.float32) * self.scale - self.mean) / self.std).transpose(2, 0, 1)
        return {
            "image": np.ascontiguousarray(chw[None]),
            "im_shape": np.array([[self.target_h, self.target_w]], np.float32),
            "scale_factor": np.array([[self.target_h / h, self.target_w / w]], np.float32),
        }

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        if self.backend == "onnxruntime":
            return self.session.run(None, {n: feed[n] for n in self.input_names})[0]
        for name in self.input_names:
            handle = self.predictor.get_input_handle(name)
            handle.reshape(feed[name].shape)
            handle.copy_from_cpu(feed[name])
        self.predictor.run()
        return self.predictor.get_output_handle(self.predictor.get_output_names()[0]).copy_to_cpu()

    def run(self, paths: list[str]) -> int:
        n = 0
        for start in range(0, len(paths), self.batch_size):
            feeds = [self.preprocess(path) for path in paths[start : start + self.batch_size]]
            self.infer({k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
            n += len(feeds)
        return n


# ---------------------------------------------------------------------------------------------
# PaddleX in its own venv
# ---------------------------------------------------------------------------------------------
def ensure_paddlex_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating PaddleX venv at {venv} (one time) ...", flush=True)
        subprocess.run(["bash", str(HERE / "setup_paddlex.sh"), str(venv)], check=True)
    return python


class PaddleXRunner:
    """A long-lived ``paddlex_runner.py`` subprocess (see its docstring for the protocol)."""

    def __init__(self, python: Path, images: list[str], model_dir: Path, variants: dict[str, dict[str, Any]], log: Path):
        env = dict(os.environ, PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK="True", PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)  # PaddleX must not see pxflow's packages
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [str(python), str(HERE / "paddlex_runner.py"), "--images", json.dumps(images), "--model-name", MODEL_NAME,
             "--model-dir", str(model_dir), "--variants", json.dumps(variants)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, cwd=str(HERE),
        )
        self.info = self._read()
        if not self.info.get("ready"):
            raise RuntimeError(f"paddlex_runner did not start: {self.info}")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@JSON "):
                return json.loads(line[len("@@JSON "):])
            self._log.write(line)
        raise RuntimeError(f"paddlex_runner exited (code {self.proc.wait()}); see {self._log.name}")

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self) -> None:
        try:
            self.ask(cmd="quit")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


# ---------------------------------------------------------------------------------------------
# variants
# ---------------------------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    group: str  # raw | paddlex | pxflow
    backend: str  # onnxruntime | paddle
    settings: dict[str, Any]
    timed_pass: Callable[[int], tuple[float, int]]  # warmup -> (seconds, images)
    role: str = ""  # "defaults" for the framework-default variant
    passes: list[float] = field(default_factory=list)  # images/s per pass

    @property
    def best(self) -> float:
        return max(self.passes) if self.passes else float("nan")


def local_pass(run: Callable[[list[str]], int], images: list[str]) -> Callable[[int], tuple[float, int]]:
    def timed(warmup: int) -> tuple[float, int]:
        run(images[:warmup])
        start = time.perf_counter()
        n = run(images)
        return time.perf_counter() - start, n

    return timed


def pxflow_variant(name: str, images: list[str], model_dir: Path, role: str = "", batch_size: int = 1, **pxflow: Any) -> Variant:
    from pxflow.pipelines import create_pipeline

    config = {"SubModules": {"ObjectDetection": {"model_name": MODEL_NAME, "model_dir": str(model_dir), "batch_size": batch_size}}}
    pipeline = create_pipeline("object_detection", config=config, **pxflow)
    backend = pipeline.model.backend.name
    settings = {"batch_size": batch_size, **pipeline.config["Pxflow"], "resolved_backend": backend}
    return Variant(name, "pxflow", backend, settings, local_pass(lambda paths: sum(1 for _ in pipeline.predict(paths)), images), role)


PADDLEX_QUIET_ORT = {"log_severity_level": 3}


def paddlex_variants(quick: bool) -> dict[str, dict[str, Any]]:
    """PaddleX's defaults and the settings worth trying on a 2-core CPU.

    ``engine=None`` with a model dir resolves to ``paddle_static`` (Paddle
    Inference, oneDNN, ``cpu_threads`` 10). ``engine="onnxruntime"`` loads the
    dir's ``inference.onnx`` (the ``hpi`` engine would need ``ultra-infer``,
    which is not on PyPI). The ONNX graph takes one image per call, so ONNX
    Runtime only runs at batch size 1.
    """
    variants = {
        "paddlex defaults": {"batch_size": 1},
        "paddlex ort": {"engine": "onnxruntime", "batch_size": 1, "engine_config": dict(PADDLEX_QUIET_ORT)},
        "paddlex ort t2": {"engine": "onnxruntime", "batch_size": 1, "engine_config": {**PADDLEX_QUIET_ORT, "intra_op_num_threads": 2}},
        "paddlex paddle t2": {"engine": "paddle", "batch_size": 1, "engine_config": {"cpu_threads": 2}},
        "paddlex paddle t2 b4": {"engine": "paddle", "batch_size": 4, "engine_config": {"cpu_threads": 2}},
    }
    if quick:
        variants = {k: variants[k] for k in ("paddlex defaults", "paddlex ort t2")}
    return variants


def pxflow_variants(images: list[str], model_dir: Path, quick: bool) -> list[Variant]:
    out = [pxflow_variant("pxflow defaults", images, model_dir, role="defaults")]
    # iw = infer_workers (threads per run: cores // iw unless t is given), w = load_workers, p = prefetch
    candidates: list[tuple[str, dict[str, Any]]] = [
        ("pxflow ort iw2 w1 p4", {"backend": "onnxruntime", "infer_workers": 2, "load_workers": 1, "prefetch": 4}),
        ("pxflow ort iw1 t2 w2 p8", {"backend": "onnxruntime", "infer_workers": 1, "load_workers": 2, "prefetch": 8}),
        ("pxflow paddle iw2", {"backend": "paddle", "infer_workers": 2}),
        ("pxflow paddle iw2 b4", {"backend": "paddle", "infer_workers": 2, "batch_size": 4}),
        ("pxflow paddle iw1 t2 b4", {"backend": "paddle", "infer_workers": 1, "batch_size": 4}),
    ]
    if quick:
        candidates = candidates[:2]
    out += [pxflow_variant(name, images, model_dir, **kw) for name, kw in candidates]
    return out


# ---------------------------------------------------------------------------------------------
# box parity
# ---------------------------------------------------------------------------------------------
def _box_diff(x: dict, y: dict) -> tuple[float, float]:
    return abs(x["score"] - y["score"]), max(abs(p - q) for p, q in zip(x["coordinate"], y["coordinate"]))


def compare_boxes(ours: dict[str, list[dict]], theirs: dict[str, list[dict]]) -> dict[str, Any]:
    """Same count per image, same class ids; max |score| and |coordinate| differences.

    Boxes are compared position by position; where two boxes of one class have
    scores that differ only in float noise (1e-7) the NMS output order can swap
    between two runs, so a position that does not match is matched instead to
    the closest unused box of the same class (counted as ``order_swaps``).
    """
    mismatches: list[str] = []
    max_score = max_coord = 0.0
    total = swaps = 0
    for name in sorted(set(ours) | set(theirs)):
        a, b = ours.get(name), theirs.get(name)
        if a is None or b is None:
            mismatches.append(f"{name}: missing on {'pxflow' if a is None else 'paddlex'} side")
            continue
        if len(a) != len(b):
            mismatches.append(f"{name}: {len(a)} boxes vs {len(b)}")
            continue
        total += len(a)
        unused = set(range(len(b)))
        for i, x in enumerate(a):
            j = i
            ds, dc = _box_diff(x, b[i]) if i in unused else (1.0, 1e9)
            if x["cls_id"] != b[i]["cls_id"] or ds > 1e-4 or dc > 0.01 or i not in unused:
                same_class = [k for k in unused if b[k]["cls_id"] == x["cls_id"]]
                if not same_class:
                    mismatches.append(f"{name}[{i}]: cls {x['cls_id']} has no counterpart")
                    continue
                j = min(same_class, key=lambda k: (_box_diff(x, b[k])[1], _box_diff(x, b[k])[0]))
                ds, dc = _box_diff(x, b[j])
                swaps += j != i
            unused.discard(j)
            max_score, max_coord = max(max_score, ds), max(max_coord, dc)
    ok = not mismatches and max_score <= 1e-4 and max_coord <= 0.01
    return {"ok": ok, "images": len(theirs), "boxes": total, "max_score_diff": max_score,
            "max_coord_diff_px": max_coord, "order_swaps": swaps, "mismatches": mismatches[:20]}


def pxflow_boxes(images: list[str], model_dir: Path, backend: str, threshold: float) -> dict[str, list[dict]]:
    from pxflow.pipelines import create_pipeline

    config = {"SubModules": {"ObjectDetection": {"model_name": MODEL_NAME, "model_dir": str(model_dir)}}}
    pipeline = create_pipeline("object_detection", config=config, backend=backend)
    return {os.path.basename(r.json["res"]["input_path"]): r.json["res"]["boxes"] for r in pipeline.predict(images, threshold=threshold)}


def run_parity(paddlex: PaddleXRunner, images: list[str], model_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for backend, pdx_variant in (("onnxruntime", "paddlex ort t2"), ("paddle", "paddlex defaults")):
        for threshold in (0.5, 0.001):
            theirs = paddlex.ask(cmd="boxes", variant=pdx_variant, threshold=threshold)["boxes"]
            ours = pxflow_boxes(images, model_dir, backend, threshold)
            result = compare_boxes(ours, theirs)
            report[f"{backend} @ {threshold}"] = result
            print(f"parity {backend:12s} threshold {threshold:<6}: {'OK ' if result['ok'] else 'MISMATCH'} "
                  f"{result['boxes']} boxes, max score diff {result['max_score_diff']:.2e}, "
                  f"max coord diff {result['max_coord_diff_px']:.2e} px, {result['order_swaps']} near-tie order swaps {result['mismatches'][:3]}", flush=True)
    return report


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def ratios(variants: list[Variant]) -> dict[str, Any]:
    def best_of(group: str) -> Variant:
        return max((v for v in variants if v.group == group and v.passes), key=lambda v: v.best)

    def by_role(group: str) -> Variant:
        return next(v for v in variants if v.group == group and v.role == "defaults")

    px_best, pdx_best = best_of("pxflow"), best_of("paddlex")
    raw_same = max((v for v in variants if v.group == "raw" and v.backend == px_best.backend), key=lambda v: v.best)
    checks = {
        "pxflow defaults / paddlex defaults": (by_role("pxflow").best / by_role("paddlex").best, 1.5),
        "pxflow best / paddlex best": (px_best.best / pdx_best.best, 1.1),
        f"pxflow best / best raw {raw_same.backend} loop ({raw_same.name})": (px_best.best / raw_same.best, 0.95),
    }
    for backend in ("onnxruntime", "paddle"):  # the same check per backend, for information
        mine = [v for v in variants if v.group == "pxflow" and v.backend == backend and v.passes]
        raws = [v for v in variants if v.group == "raw" and v.backend == backend and v.passes]
        if mine and raws and backend != px_best.backend:
            m, r = max(mine, key=lambda v: v.best), max(raws, key=lambda v: v.best)
            checks[f"pxflow best {backend} ({m.name}) / best raw {backend} loop ({r.name})"] = (m.best / r.best, 0.95)
    return {
        "pxflow_best": px_best.name,
        "paddlex_best": pdx_best.name,
        "checks": {k: {"ratio": round(r, 3), "target": t, "met": r >= t} for k, (r, t) in checks.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per variant (best counts)")
    parser.add_argument("--warmup", type=int, default=3, help="images run before each timed pass")
    parser.add_argument("--quick", action="store_true", help="1 repeat, few variants: check the script")
    parser.add_argument("--no-parity", action="store_true")
    parser.add_argument("--no-paddlex", action="store_true", help="skip PaddleX (no venv needed; no PaddleX ratios)")
    parser.add_argument("--paddlex-venv", type=Path, default=Path(os.environ.get("PXFLOW_PADDLEX_VENV", DEFAULT_VENV)))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    started = time.perf_counter()

    images = list_images()
    model_dir = combined_model_dir()
    print(f"{len(images)} images, model dir {model_dir}, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    paddlex: PaddleXRunner | None = None
    variants: list[Variant] = []
    variants.append(Variant("raw onnxruntime", "raw", "onnxruntime", {"threads": 2}, local_pass(RawLoop("onnxruntime").run, images)))
    variants.append(Variant("raw paddle", "raw", "paddle", {"threads": 2}, local_pass(RawLoop("paddle").run, images)))
    variants.append(Variant("raw paddle b4", "raw", "paddle", {"threads": 2, "batch_size": 4}, local_pass(RawLoop("paddle", batch_size=4).run, images)))
    if not args.no_paddlex:
        python = ensure_paddlex_venv(args.paddlex_venv)
        specs = paddlex_variants(args.quick)
        paddlex = PaddleXRunner(python, images, model_dir, specs, args.out.parent / "paddlex_runner.log")
        print(f"PaddleX {paddlex.info['paddlex']} ready; unavailable: {paddlex.info['errors'] or 'none'}", flush=True)
        for name, spec in specs.items():
            if name in paddlex.info["errors"]:
                continue
            backend = "onnxruntime" if spec.get("engine") == "onnxruntime" else "paddle"

            def timed(warmup: int, name: str = name) -> tuple[float, int]:
                answer = paddlex.ask(cmd="time", variant=name, warmup=warmup)
                return answer["seconds"], answer["n"]

            variants.append(Variant(name, "paddlex", backend, spec, timed, "defaults" if name == "paddlex defaults" else ""))
    variants += pxflow_variants(images, model_dir, args.quick)

    try:
        for round_ in range(args.repeats):
            shift = round_ % len(variants)
            for v in variants[shift:] + variants[:shift]:
                seconds, n = v.timed_pass(args.warmup)
                if n != len(images):
                    raise RuntimeError(f"{v.name} yielded {n} results for {len(images)} images")
                v.passes.append(n / seconds)
                print(f"  round {round_ + 1}/{args.repeats} {v.name:24s} {n / seconds:7.1f} images/s", flush=True)
        parity = None if (args.no_parity or paddlex is None) else run_parity(paddlex, images, model_dir)
    finally:
        if paddlex is not None:
            paddlex.close()

    print(f"\n| variant | group | backend | images/s (best of {args.repeats}) | all passes |")
    print("|---|---|---|---:|---|")
    for v in variants:
        print(f"| {v.name} | {v.group} | {v.backend} | {v.best:.1f} | {', '.join(f'{p:.1f}' for p in v.passes)} |")
    summary = ratios(variants) if paddlex is not None else None
    if summary:
        print(f"\npxflow best = {summary['pxflow_best']}, PaddleX best = {summary['paddlex_best']}")
        for name, c in summary["checks"].items():
            print(f"  {name}: {c['ratio']:.2f}x (target >= {c['target']}) {'met' if c['met'] else 'NOT met'}")
    elapsed = time.perf_counter() - started
    print(f"\nbench took {elapsed:.0f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average_at_end": os.getloadavg()},
        "images": len(images), "repeats": args.repeats, "warmup": args.warmup, "model_dir": str(model_dir),
        "paddlex_version": paddlex.info["paddlex"] if paddlex else None,
        "variants": [{"name": v.name, "group": v.group, "backend": v.backend, "settings": v.settings,
                      "images_per_s": round(v.best, 2), "passes": [round(p, 2) for p in v.passes]} for v in variants],
        "ratios": summary, "parity": parity, "seconds": round(elapsed, 1),
    }
    args.out.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
