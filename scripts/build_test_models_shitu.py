"""Build small, format-faithful stand-ins for PP-ShiTuV2_det and PP-ShiTuV2_rec with ``paddle.jit.save``.

No real ShiTu weights exist on this machine, and tests must never download
any. These two models have the official interfaces, so every line of the
pipeline that feeds and reads them is the line a real export would exercise:

- ``PP-ShiTuV2_det`` (PaddleDetection export layout): inputs ``im_shape`` [B,2],
  ``image`` [B,3,640,640], ``scale_factor`` [B,2] -> boxes [B,6]
  ``(class 0, score, x1, y1, x2, y2)`` in original-image pixels + counts [B] int32.
  The "mainbody" is the bounding box of the pixels that differ from the
  image's border colour (a plain-background product photo gives its product);
  an image with no such pixels scores 0, so the pipeline falls back to the
  whole image. The answer is predictable by hand, which is what tests need.
- ``PP-ShiTuV2_rec`` (PaddleClas export layout): input ``x`` [B,3,224,224] ->
  features [B,512], un-normalised (``PostProcess: NormalizeFeatures`` in
  ``inference.yml`` tells the predictor to L2-normalise, as for the real model).
  The embedding is fixed, deterministic image statistics (a 4x4 colour layout,
  colour moments, soft colour histograms, gradient-energy layout) projected to
  512-d by a seeded Gaussian matrix: retrieval on real photos works, but not
  perfectly, like a weak real model.

Usage: ``python scripts/build_test_models_shitu.py OUT_DIR`` writes
``OUT_DIR/PP-ShiTuV2_det`` and ``OUT_DIR/PP-ShiTuV2_rec`` (``inference.json``,
``inference.pdiparams``, ``inference.yml``). Tests build them into a temporary
directory once per session; the binaries are never committed.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import yaml

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
DET_SIZE = 640
REC_SIZE = 224
FEATURE_DIM = 512
SEED = 20240604

DET_YML = {
    "mode": "paddle",
    "draw_threshold": 0.5,
    "metric": "COCO",
    "use_dynamic_shape": False,
    "Global": {"model_name": "PP-ShiTuV2_det"},
    "arch": "PicoDet",
    "min_subgraph_size": 3,
    "Preprocess": [
        {"interp": 2, "keep_ratio": False, "target_size": [DET_SIZE, DET_SIZE], "type": "Resize"},
        {"is_scale": True, "mean": MEAN, "std": STD, "type": "NormalizeImage"},
        {"type": "Permute"},
    ],
    "label_list": ["mainbody"],
}

REC_YML = {
    "Global": {"model_name": "PP-ShiTuV2_rec"},
    "PreProcess": {
        "transform_ops": [
            {"ResizeImage": {"size": [REC_SIZE, REC_SIZE], "return_numpy": False, "interpolation": "bilinear", "backend": "cv2"}},
            {"NormalizeImage": {"scale": 0.00392156862745098, "mean": MEAN, "std": STD, "order": "hwc"}},
            {"ToCHWImage": None},
        ]
    },
    "PostProcess": {"NormalizeFeatures": None},
}


def _det_layer():
    import paddle
    import paddle.nn.functional as F

    class MainbodyDet(paddle.nn.Layer):
        """Box of the pixels unlike the border colour; score 0.9, or 0 when there are none."""

        def __init__(self) -> None:
            super().__init__()
            # Summed |pixel - border colour| over the 3 normalised channels above which a pixel
            # is "object" (~25 grey levels per channel); a parameter so the export has weights.
            self.tau = self.create_parameter([1], default_initializer=paddle.nn.initializer.Constant(1.2))

        def forward(self, im_shape, image, scale_factor):
            b = 8
            border = paddle.concat(
                [
                    image[:, :, :b, :].flatten(2),
                    image[:, :, -b:, :].flatten(2),
                    image[:, :, :, :b].flatten(2),
                    image[:, :, :, -b:].flatten(2),
                ],
                axis=2,
            )
            bg = border.mean(axis=2, keepdim=True).unsqueeze(-1)  # [B,3,1,1]
            diff = (image - bg).abs().sum(axis=1, keepdim=True)  # [B,1,H,W]
            mask = paddle.cast(diff > self.tau, "float32")
            mask = paddle.cast(F.avg_pool2d(mask, 9, stride=1, padding=4) > 0.5, "float32")[:, 0]
            rows = mask.max(axis=2)  # [B,H]
            cols = mask.max(axis=1)  # [B,W]
            h, w = im_shape[:, 0], im_shape[:, 1]  # the resized (network-input) size
            y1 = paddle.cast(paddle.argmax(rows, axis=1), "float32")
            y2 = h - paddle.cast(paddle.argmax(paddle.flip(rows, [1]), axis=1), "float32")
            x1 = paddle.cast(paddle.argmax(cols, axis=1), "float32")
            x2 = w - paddle.cast(paddle.argmax(paddle.flip(cols, [1]), axis=1), "float32")
            found = rows.max(axis=1)
            sy, sx = scale_factor[:, 0], scale_factor[:, 1]
            score = found * 0.9
            cls = paddle.zeros_like(score)
            boxes = paddle.stack([cls, score, x1 / sx, y1 / sy, x2 / sx, y2 / sy], axis=1)
            counts = paddle.ones_like(paddle.cast(score, "int32"))
            return boxes, counts

    return MainbodyDet()


def _rec_layer():
    import paddle
    import paddle.nn.functional as F

    rng = np.random.default_rng(SEED)
    centres = np.linspace(-2.0, 2.4, 8, dtype=np.float32)
    n_in = 48 + 6 + 24 + 16 + 32
    projection = (rng.standard_normal((n_in, FEATURE_DIM)) / np.sqrt(n_in)).astype(np.float32)
    sobel = np.array(
        [[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]], [[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]]], dtype=np.float32
    ) / 4.0

    class StatsEmbedding(paddle.nn.Layer):
        """Deterministic colour/texture statistics -> fixed random projection to 512-d."""

        def __init__(self) -> None:
            super().__init__()
            init = paddle.nn.initializer.Assign
            self.centres = self.create_parameter([1, 1, 8, 1, 1], default_initializer=init(centres.reshape(1, 1, 8, 1, 1)))
            self.sobel = self.create_parameter([2, 1, 3, 3], default_initializer=init(sobel))
            self.projection = self.create_parameter([n_in, FEATURE_DIM], default_initializer=init(projection))

        def forward(self, x):
            layout = F.adaptive_avg_pool2d(x, 4).flatten(1)  # [B,48] colour layout
            mean = x.mean(axis=[2, 3])
            std = (x - mean.unsqueeze(-1).unsqueeze(-1)).pow(2).mean(axis=[2, 3]).sqrt() - 1.0
            small = F.avg_pool2d(x, 4)  # [B,3,56,56] keeps the histogram cheap
            soft = paddle.exp(-((small.unsqueeze(2) - self.centres) ** 2) / 0.18)  # [B,3,8,56,56]
            hist = soft.mean(axis=[3, 4]).flatten(1) * 2.0 - 0.25  # [B,24]
            grey = x.mean(axis=1, keepdim=True)
            grad = F.conv2d(grey, self.sobel, padding=1)  # [B,2,H,W]
            energy = F.adaptive_avg_pool2d((grad.pow(2).sum(axis=1, keepdim=True) + 1e-6).sqrt(), 4).flatten(1) - 0.3
            direction = F.adaptive_avg_pool2d(grad.abs(), 4).flatten(1) - 0.2  # [B,32]
            stats = paddle.concat([layout * 0.5, mean, std, hist, energy * 2.0, direction * 2.0], axis=1)
            return paddle.matmul(stats, self.projection)

    return StatsEmbedding()


def _save(layer, specs, directory: str, config: dict) -> None:
    import paddle

    os.makedirs(directory, exist_ok=True)
    layer.eval()
    static = paddle.jit.to_static(layer, input_spec=specs, full_graph=True)
    paddle.jit.save(static, os.path.join(directory, "inference"))
    with open(os.path.join(directory, "inference.yml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False, allow_unicode=True)


def build_models(out_dir: str) -> dict[str, str]:
    """Write both model directories under ``out_dir``; returns ``{"det": dir, "rec": dir}``."""
    import paddle
    from paddle.static import InputSpec

    paddle.set_device("cpu")
    paddle.seed(SEED)
    det_dir = os.path.join(out_dir, "PP-ShiTuV2_det")
    rec_dir = os.path.join(out_dir, "PP-ShiTuV2_rec")
    _save(
        _det_layer(),
        [
            InputSpec([None, 2], "float32", "im_shape"),
            InputSpec([None, 3, DET_SIZE, DET_SIZE], "float32", "image"),
            InputSpec([None, 2], "float32", "scale_factor"),
        ],
        det_dir,
        DET_YML,
    )
    _save(_rec_layer(), [InputSpec([None, 3, REC_SIZE, REC_SIZE], "float32", "x")], rec_dir, REC_YML)
    return {"det": det_dir, "rec": rec_dir}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="directory to write PP-ShiTuV2_det/ and PP-ShiTuV2_rec/ into")
    args = p.parse_args(argv)
    for kind, path in build_models(args.out).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
