"""Build small, format-faithful segmentation models for tests and benchmarks (no real weights exist here).

Every model is a ``paddle.jit.save`` export (Paddle 3 PIR ``inference.json`` +
``inference.pdiparams``) with the official exports' input and output names,
ranks and dtypes, a PaddleX-style ``inference.yml``, and (``--onnx``) the same
graph converted with paddle2onnx (PyPI, works with paddle 3.2.2) to
``inference.onnx``. Weights and ops are chosen so outputs are predictable:

``MaskBox`` (Mask-RT-DETR / MaskRCNN / PP-YOLOE_seg layout)
    inputs ``im_shape`` [B,2], ``image`` [B,3,H,W], ``scale_factor`` [B,2] (float32);
    outputs boxes [B*4, 6] float32 (class, score, x1, y1, x2, y2 in original
    pixels), counts [B] int32, masks [B*4, Hmax, Wmax] int32. Per image: the
    boxes :data:`MASKBOX_BOXES` (fractions of the original width/height) with
    :data:`MASKBOX_SCORES` and :data:`MASKBOX_CLASSES`, the last row a padding
    row (class -1); each mask is exactly its box (pixel centres in
    ``[x1, x2) x [y1, y2)``), on a frame padded to the batch's largest image,
    as PaddleDetection pads it.

``SOLOv2``
    same inputs; outputs bbox_num [1] int32, cate_label [N] int64, cate_score
    [N] float32, segm [N, H, W] uint8 (PaddleX reads outputs 1, 2, 3). Masks
    are the rectangles :data:`SOLO_RECTS`, plus SOLOv2's trailing fake row
    (score 0, empty mask).

``SAM`` (SAM-H_box / SAM-H_point layout)
    inputs ``img`` [1,3,1024,1024] float32 and ``prompt`` float32 ([N,4] boxes,
    or [1,1,2] one point, in the 1024 frame); output low-res mask logits
    [N,1,256,256] float32: +10 inside the prompted box / within
    :data:`SAM_POINT_RADIUS` (1024-frame pixels) of the point, -10 elsewhere,
    plus ``0 * mean(image embedding)`` so the encoder is really run.
    ``--split`` also writes pxflow's split layout (see
    ``pipelines/open_vocabulary_segmentation/model.py``): ``encoder/``
    (``img`` -> ``image_embeddings`` [1,C,64,64]) and ``decoder/``
    (``image_embeddings``, ``prompt`` [N,4] or [N,1,2] -> [N,1,256,256]).
    ``encoder_depth`` / ``encoder_width`` set how heavy the encoder is
    (benchmarks make it dominate, as a real SAM's ViT-H does).

Usage: ``python scripts/build_test_models_seg.py OUT_DIR [--onnx] [--encoder-depth N]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
import yaml

COCO_LABELS = ["person", "bicycle", "car", "motorcycle", "airplane"]
MASKBOX_BOXES = [[0.10, 0.15, 0.45, 0.60], [0.50, 0.20, 0.90, 0.55], [0.30, 0.62, 1.20, 0.95], [0.0, 0.0, 0.2, 0.2]]
MASKBOX_SCORES = [0.95, 0.70, 0.40, 0.99]
MASKBOX_CLASSES = [0, 2, 1, -1]
SOLO_RECTS = [[0.05, 0.10, 0.40, 0.50], [0.55, 0.30, 0.95, 0.90], [0.20, 0.60, 0.50, 0.80]]
SOLO_SCORES = [0.90, 0.60, 0.30]
SOLO_CLASSES = [3, 0, 4]
SAM_SIZE = 1024
SAM_LOW_RES = 256
SAM_POINT_RADIUS = 96.0
SAM_EMBED_CHANNELS = 16
DETECTION_PREPROCESS = [
    {"type": "Resize", "target_size": [64, 64], "keep_ratio": False, "interp": 2},
    {"type": "NormalizeImage", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "is_scale": True},
    {"type": "Permute"},
]
SOLO_PREPROCESS = [
    {"type": "Resize", "target_size": [64, 96], "keep_ratio": True, "interp": 1},
    {"type": "NormalizeImage", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "is_scale": True},
    {"type": "Permute"},
    {"type": "PadStride", "stride": 32},
]
SAM_PROCESSOR = {"type": "SAMProcessor", "size": SAM_SIZE, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


def _paddle():
    import paddle

    paddle.seed(0)
    paddle.set_device("cpu")
    return paddle


# -- model definitions (built lazily so importing this file does not import paddle) -----------
def _original_hw(paddle, im_shape, scale_factor):
    """PaddleDetection's original size: ``floor(im_shape / scale_factor + 0.5)``, [B,2] (h, w)."""
    return paddle.floor(im_shape / scale_factor + 0.5)


def _centres(paddle, n):
    return paddle.arange(n, dtype="float32") + 0.5


def make_maskbox_net():
    paddle = _paddle()
    nn = paddle.nn

    class MaskBoxNet(nn.Layer):
        def __init__(self):
            super().__init__()
            self.probe = nn.Conv2D(3, 1, 1)  # keeps the image in the graph; contributes 0

        def forward(self, im_shape, image, scale_factor):
            zero = self.probe(image).mean(axis=[0, 1, 2, 3]) * 0.0
            orig = _original_hw(paddle, im_shape, scale_factor)  # [B,2] h,w
            b = paddle.shape(image)[0]
            k = len(MASKBOX_BOXES)
            frac = paddle.to_tensor(np.array(MASKBOX_BOXES, np.float32))  # [K,4]
            whwh = paddle.stack([orig[:, 1], orig[:, 0], orig[:, 1], orig[:, 0]], axis=1)  # [B,4]
            boxes = frac.unsqueeze(0) * whwh.unsqueeze(1)  # [B,K,4]
            cls = paddle.to_tensor(np.array(MASKBOX_CLASSES, np.float32)).unsqueeze(0).expand([b, k])
            score = paddle.to_tensor(np.array(MASKBOX_SCORES, np.float32)).unsqueeze(0).expand([b, k]) + zero
            rows = paddle.concat([cls.unsqueeze(-1), score.unsqueeze(-1), boxes], axis=-1).reshape([-1, 6])
            counts = paddle.full([b], k, dtype="int32") + paddle.zeros([b], dtype="int32")
            hmax = paddle.cast(paddle.max(orig[:, 0], axis=0), "int64")
            wmax = paddle.cast(paddle.max(orig[:, 1], axis=0), "int64")
            ys = _centres(paddle, hmax).reshape([1, 1, -1, 1])
            xs = _centres(paddle, wmax).reshape([1, 1, 1, -1])
            x1, y1, x2, y2 = (boxes[:, :, i].unsqueeze(-1).unsqueeze(-1) for i in range(4))
            inside = (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)  # [B,K,H,W]
            masks = paddle.cast(inside, "int32").reshape([-1, paddle.shape(inside)[2], paddle.shape(inside)[3]])
            return rows, counts, masks

    return MaskBoxNet()


def make_solo_net():
    paddle = _paddle()
    nn = paddle.nn

    class Solo(nn.Layer):
        def __init__(self):
            super().__init__()
            self.probe = nn.Conv2D(3, 1, 1)

        def forward(self, im_shape, image, scale_factor):
            zero = self.probe(image).mean(axis=[0, 1, 2, 3]) * 0.0
            orig = _original_hw(paddle, im_shape, scale_factor)[0]  # batch 1, as SOLOv2 exports
            h = paddle.cast(orig[0], "int64")
            w = paddle.cast(orig[1], "int64")
            frac = paddle.to_tensor(np.array(SOLO_RECTS + [[0, 0, 0, 0]], np.float32))
            # concat of slices: oneDNN mis-shapes ``stack`` of 0-d tensors (gives [1,4,4])
            rect = frac * paddle.concat([orig[1:2], orig[0:1], orig[1:2], orig[0:1]]).reshape([1, 4])
            ys = _centres(paddle, h).reshape([1, -1, 1])
            xs = _centres(paddle, w).reshape([1, 1, -1])
            x1, y1, x2, y2 = (rect[:, i].reshape([-1, 1, 1]) for i in range(4))
            segm = paddle.cast((ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2), "uint8")
            labels = paddle.to_tensor(np.array(SOLO_CLASSES + [0], np.int64))
            scores = paddle.to_tensor(np.array(SOLO_SCORES + [0.0], np.float32)) + zero
            num = paddle.shape(labels)[0:1].astype("int32")
            return num, labels, scores, segm

    return Solo()


def make_sam_parts(kind: str, encoder_depth: int = 1, encoder_width: int = 8):
    """(encoder, decoder, whole) layers for ``kind`` in {"box", "point"}."""
    paddle = _paddle()
    nn = paddle.nn
    grid = (_np_centres(SAM_LOW_RES) * (SAM_SIZE / SAM_LOW_RES)).astype(np.float32)  # low-res pixel centres, 1024 frame

    class Encoder(nn.Layer):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2D(3, encoder_width, 4, stride=4)  # 256 x 256
            self.blocks = nn.LayerList([nn.Conv2D(encoder_width, encoder_width, 3, padding=1) for _ in range(encoder_depth)])
            self.head = nn.Conv2D(encoder_width, SAM_EMBED_CHANNELS, 4, stride=4)  # 64 x 64

        def forward(self, img):
            x = nn.functional.relu(self.stem(img))
            for block in self.blocks:
                x = nn.functional.relu(block(x))
            return self.head(x)

    class Decoder(nn.Layer):
        def __init__(self):
            super().__init__()
            self.grid = paddle.to_tensor(grid)

        def forward(self, image_embeddings, prompt):
            zero = image_embeddings.mean(axis=[0, 1, 2, 3]) * 0.0
            gy = self.grid.reshape([1, -1, 1])
            gx = self.grid.reshape([1, 1, -1])
            if kind == "box":
                p = prompt.reshape([-1, 4])
                x1, y1, x2, y2 = (p[:, i].reshape([-1, 1, 1]) for i in range(4))
                inside = (gx >= x1) & (gx < x2) & (gy >= y1) & (gy < y2)
            else:
                p = prompt.reshape([-1, 2])
                px, py = p[:, 0].reshape([-1, 1, 1]), p[:, 1].reshape([-1, 1, 1])
                dx, dy = gx - px, gy - py  # [N,1,256] and [N,256,1]
                ones = paddle.ones_like(dx)
                # dy^2 + dx^2 as a batched outer sum [N,256,2] @ [N,2,256] (oneDNN's broadcast add is very slow)
                d2 = paddle.bmm(paddle.concat([dy * dy, ones.transpose([0, 2, 1])], axis=2), paddle.concat([ones, dx * dx], axis=1))
                inside = d2 <= SAM_POINT_RADIUS**2
            logits = paddle.cast(inside, "float32") * 20.0 + (zero - 10.0)  # +10 inside, -10 outside
            return logits.unsqueeze(1)

    class Whole(nn.Layer):
        def __init__(self, encoder, decoder):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder

        def forward(self, img, prompt):
            return self.decoder(self.encoder(img), prompt)

    encoder, decoder = Encoder(), Decoder()
    return encoder, decoder, Whole(encoder, decoder)


def _np_centres(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) + 0.5


# -- saving --------------------------------------------------------------------------------------
def _write_yml(model_dir: str, config: dict[str, Any]) -> None:
    with open(os.path.join(model_dir, "inference.yml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)


def _save(layer, specs, model_dir: str, config: dict[str, Any], onnx: bool) -> str:
    paddle = _paddle()
    os.makedirs(model_dir, exist_ok=True)
    layer.eval()
    static = paddle.jit.to_static(layer, input_spec=specs, full_graph=True)
    paddle.jit.save(static, os.path.join(model_dir, "inference"))
    _write_yml(model_dir, config)
    if onnx:
        export_onnx(model_dir)
    return model_dir


def export_onnx(model_dir: str) -> str:
    """``inference.json`` -> ``inference.onnx`` with paddle2onnx (same input names)."""
    import paddle2onnx

    target = os.path.join(model_dir, "inference.onnx")
    paddle2onnx.export(
        os.path.join(model_dir, "inference.json"),
        os.path.join(model_dir, "inference.pdiparams"),
        target,
        opset_version=17,
        enable_onnx_checker=True,
        verbose=False,
    )
    return target


def _det_config(name: str, preprocess, labels, threshold: float = 0.5) -> dict[str, Any]:
    return {
        "mode": "paddle",
        "draw_threshold": threshold,
        "metric": "COCO",
        "use_dynamic_shape": False,
        "Global": {"model_name": name},
        "arch": "DETR" if "DETR" in name else "SOLOv2",
        "min_subgraph_size": 3,
        "Preprocess": preprocess,
        "label_list": labels,
    }


def build_maskbox(out: str, onnx: bool = False, name: str = "Mask-RT-DETR-S") -> str:
    from paddle.static import InputSpec

    specs = [
        InputSpec([None, 2], "float32", "im_shape"),
        InputSpec([None, 3, None, None], "float32", "image"),
        InputSpec([None, 2], "float32", "scale_factor"),
    ]
    return _save(make_maskbox_net(), specs, out, _det_config(name, DETECTION_PREPROCESS, COCO_LABELS), onnx)


def build_solo(out: str, onnx: bool = False) -> str:
    from paddle.static import InputSpec

    specs = [
        InputSpec([1, 2], "float32", "im_shape"),
        InputSpec([1, 3, None, None], "float32", "image"),
        InputSpec([1, 2], "float32", "scale_factor"),
    ]
    return _save(make_solo_net(), specs, out, _det_config("SOLOv2", SOLO_PREPROCESS, COCO_LABELS), onnx)


def _sam_config(name: str) -> dict[str, Any]:
    return {"Global": {"model_name": name}, "Preprocess": [], "Processor": dict(SAM_PROCESSOR)}


def _prompt_spec(kind: str, split: bool):
    from paddle.static import InputSpec

    if kind == "box":
        return InputSpec([None, 4], "float32", "prompt")
    return InputSpec([None if split else 1, 1, 2], "float32", "prompt")


def build_sam(out: str, kind: str, onnx: bool = False, split: bool = False, encoder_depth: int = 1, encoder_width: int = 8) -> str:
    """The official single-graph layout, or (``split``) pxflow's ``encoder/`` + ``decoder/`` layout."""
    from paddle.static import InputSpec

    name = f"SAM-H_{kind}"
    encoder, decoder, whole = make_sam_parts(kind, encoder_depth, encoder_width)
    img = InputSpec([1, 3, SAM_SIZE, SAM_SIZE], "float32", "img")
    if not split:
        return _save(whole, [img, _prompt_spec(kind, False)], out, _sam_config(name), onnx)
    os.makedirs(out, exist_ok=True)
    _write_yml(out, _sam_config(name))
    _save(encoder, [img], os.path.join(out, "encoder"), _sam_config(name), onnx)
    emb = InputSpec([1, SAM_EMBED_CHANNELS, 64, 64], "float32", "image_embeddings")
    _save(decoder, [emb, _prompt_spec(kind, True)], os.path.join(out, "decoder"), _sam_config(name), onnx)
    return out


def build_all(out: str, onnx: bool = True, encoder_depth: int = 1, encoder_width: int = 8) -> dict[str, str]:
    """Every test model under ``out``; returns name -> model dir."""
    dirs = {
        "maskbox": build_maskbox(os.path.join(out, "Mask-RT-DETR-S"), onnx),
        "solov2": build_solo(os.path.join(out, "SOLOv2"), onnx),
    }
    for kind in ("box", "point"):
        dirs[f"sam_{kind}"] = build_sam(os.path.join(out, f"SAM-H_{kind}"), kind, onnx, False, encoder_depth, encoder_width)
        dirs[f"sam_{kind}_split"] = build_sam(
            os.path.join(out, f"SAM-H_{kind}_split"), kind, onnx, True, encoder_depth, encoder_width
        )
    return dirs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="directory to write the model folders into")
    p.add_argument("--onnx", action="store_true", help="also write inference.onnx (paddle2onnx)")
    p.add_argument("--encoder-depth", type=int, default=1, help="3x3 conv blocks in the SAM test encoder")
    p.add_argument("--encoder-width", type=int, default=8, help="channels of the SAM test encoder")
    args = p.parse_args(argv)
    for name, path in build_all(args.out, args.onnx, args.encoder_depth, args.encoder_width).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
