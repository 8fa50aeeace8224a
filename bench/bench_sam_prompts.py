"""SAM prompt-scaling benchmark (issue 3): what do 10 prompts on one image cost compared with one?

    python bench/bench_sam_prompts.py            # default sizes, ~1-2 minutes on 2 cores
    python bench/bench_sam_prompts.py --quick    # fewer repeats (checking the script)

Models come from ``scripts/build_test_models_seg.py`` (built into
``bench/.cache/sam_models``), with an encoder made heavy enough to dominate as
SAM's ViT-H does (``--encoder-depth``/``--encoder-width``), in two layouts:

- ``split`` (pxflow): ``encoder/`` + ``decoder/``; the embedding is computed once
  per image and all prompts share one decoder call;
- ``official`` (PaddleX's SAM-H_box / SAM-H_point): one graph per prompt type;
  boxes go in one call, but a point graph takes one point, so N points are N
  full encoder runs.

Each case is ``predict()`` on one image (decode + preprocess + model +
postprocess to full-size masks), best of ``--repeats`` after a warm-up, the
cases interleaved round by round. The ratio ``t(10 prompts) / t(1 prompt)`` is
what the issue bounds (<= 1.3 for the split model).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pxflow.pipelines.registry import create_pipeline  # noqa: E402


def build_models(out: Path, depth: int, width: int) -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("build_seg", ROOT / "scripts" / "build_test_models_seg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dirs = {}
    for kind in ("box", "point"):
        for split in (False, True):
            d = out / f"SAM-H_{kind}{'_split' if split else ''}_d{depth}w{width}"
            if not (d / "inference.yml").is_file():
                mod.build_sam(str(d), kind, onnx=True, split=split, encoder_depth=depth, encoder_width=width)
            dirs[(kind, "split" if split else "official")] = str(d)
    return dirs


def pick_image() -> str:
    coco = ROOT.parent / "shared" / "data" / "coco_val_mini" / "images"
    images = sorted(coco.glob("*.jpg")) if coco.is_dir() else []
    if images:
        return str(images[0])
    import cv2
    import numpy as np

    path = ROOT / "bench" / ".cache" / "sam_bench.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    return str(path)


def prompts(kind: str, n: int, w: int, h: int) -> list[list[float]]:
    out = []
    for i in range(n):
        f = (i + 1) / (n + 2)
        if kind == "box":
            out.append([f * w * 0.5, f * h * 0.5, f * w * 0.5 + w * 0.4, f * h * 0.5 + h * 0.4])
        else:
            out.append([f * w, f * h])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--encoder-depth", type=int, default=6)
    p.add_argument("--encoder-width", type=int, default=32)
    p.add_argument("--backend", default="auto", choices=["auto", "paddle", "onnxruntime"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "sam_prompts.json"))
    args = p.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    cache = ROOT / "bench" / ".cache" / "sam_models"
    cache.mkdir(parents=True, exist_ok=True)
    dirs = build_models(cache, args.encoder_depth, args.encoder_width)
    image = pick_image()
    import cv2

    h, w = cv2.imread(image).shape[:2]
    pipes = {}
    for layout in ("split", "official"):
        cfg = {
            "SubModules": {
                "BoxPromptSegmentation": {"model_dir": dirs[("box", layout)]},
                "PointPromptSegmentation": {"model_dir": dirs[("point", layout)]},
            }
        }
        pipes[layout] = create_pipeline("open_vocabulary_segmentation", config=cfg, backend=args.backend)
    cases = [(layout, kind, n) for layout in ("split", "official") for kind in ("box", "point") for n in (1, 10)]
    best = {c: float("inf") for c in cases}
    for layout, kind, n in cases:  # warm-up
        list(pipes[layout].predict(image, prompt_type=kind, prompt=prompts(kind, n, w, h)))
    for r in range(repeats):
        for case in cases[r % len(cases) :] + cases[: r % len(cases)]:
            layout, kind, n = case
            t0 = time.perf_counter()
            res = list(pipes[layout].predict(image, prompt_type=kind, prompt=prompts(kind, n, w, h)))
            best[case] = min(best[case], time.perf_counter() - t0)
            assert res[0].ok and len(res[0]["masks"]) == n
    rows = []
    for layout in ("split", "official"):
        for kind in ("box", "point"):
            t1, t10 = best[(layout, kind, 1)], best[(layout, kind, 10)]
            rows.append({"layout": layout, "prompt_type": kind, "t1_ms": t1 * 1e3, "t10_ms": t10 * 1e3, "ratio": t10 / t1})
    backend = pipes["split"].models["box"].get().encoder.name
    report = {
        "image": os.path.basename(image),
        "image_size": [h, w],
        "encoder": {"depth": args.encoder_depth, "width": args.encoder_width},
        "backend": backend,
        "repeats": repeats,
        "cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"image {report['image']} {w}x{h}, backend {backend}, best of {repeats}")
    print("| layout | prompts | 1 prompt (ms) | 10 prompts (ms) | 10 / 1 |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['layout']} | {row['prompt_type']} | {row['t1_ms']:.0f} | {row['t10_ms']:.0f} | {row['ratio']:.2f}x |")
    split_ok = all(r["ratio"] <= 1.3 for r in rows if r["layout"] == "split")
    print(f"split layout 10 prompts <= 1.3x one prompt: {'yes' if split_ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
