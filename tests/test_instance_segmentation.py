"""instance_segmentation on format-faithful test models (Mask-RT-DETR and SOLOv2 layouts), Paddle and ONNX."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from pxflow.flows.cli.predict import main as cli_main
from pxflow.pipelines.ops.masks import box_mask, decode_rle
from pxflow.pipelines.registry import create_pipeline
from tests.conftest import PICODET_PADDLE, require_shared
from tests.support.seg_models import build_script, seg_images, seg_models  # noqa: F401  (fixtures)

B = build_script()
BACKENDS = ["paddle", "onnxruntime"]


def make(model_dir: str, backend: str = "paddle", **sub) -> object:
    cfg = {"SubModules": {"InstanceSegmentation": {"model_dir": model_dir, **sub}}}
    return create_pipeline("instance_segmentation", config=cfg, backend=backend)


def expected_maskbox(h: int, w: int, threshold: float):
    """What MaskBox must give for an ``h x w`` image: its fixed boxes, clipped, scored above ``threshold``."""
    out = []
    for frac, score, cls in zip(B.MASKBOX_BOXES, B.MASKBOX_SCORES, B.MASKBOX_CLASSES):
        if cls < 0 or score <= threshold:
            continue
        x1, y1, x2, y2 = frac[0] * w, frac[1] * h, min(frac[2] * w, w), min(frac[3] * h, h)
        out.append((cls, score, [x1, y1, x2, y2]))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_boxes_and_masks_per_image_in_batches(seg_models, seg_images, backend):
    pipe = make(seg_models["maskbox"], backend, batch_size=2, threshold=0.3)
    paths = [seg_images[k] for k in ("a", "b", "c")]
    results = list(pipe.predict(paths))
    assert [r.input_path for r in results] == paths
    for r, path in zip(results, paths):
        h, w = cv2.imread(path).shape[:2]
        want = expected_maskbox(h, w, 0.3)
        assert len(r["boxes"]) == len(want) == 3  # the padding row (class -1, score 0.99) is dropped
        assert r["masks"].shape == (3, h, w) and r["masks"].dtype == bool
        for box, mask, (cls, score, coord) in zip(r["boxes"], r["masks"], want):
            assert box["cls_id"] == cls and box["label"] == B.COCO_LABELS[cls]
            assert box["score"] == pytest.approx(score, abs=1e-6)
            assert box["coordinate"] == pytest.approx(coord, abs=1e-3)
            assert (mask == box_mask(box["coordinate"], h, w)).all()  # exactly the box the model reported


@pytest.mark.parametrize("backend", BACKENDS)
def test_solov2_layout_masks_give_the_boxes(seg_models, seg_images, backend):
    pipe = make(seg_models["solov2"], backend, batch_size=2, threshold=0.25)  # batch 2 on a one-image export
    paths = [seg_images["a"], seg_images["b"]]
    results = list(pipe.predict(paths))
    for r, path in zip(results, paths):
        h, w = cv2.imread(path).shape[:2]
        assert len(r["boxes"]) == 3  # SOLOv2's trailing fake row (score 0) is dropped
        for box, mask, rect, cls, score in zip(r["boxes"], r["masks"], B.SOLO_RECTS, B.SOLO_CLASSES, B.SOLO_SCORES):
            assert box["cls_id"] == cls and box["score"] == pytest.approx(score, abs=1e-6)
            want = box_mask([rect[0] * w, rect[1] * h, rect[2] * w, rect[3] * h], h, w)
            assert (mask == want).all()
            ys, xs = np.nonzero(want)
            assert box["coordinate"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_thresholds_default_call_and_per_class(seg_models, seg_images):
    pipe = make(seg_models["maskbox"], "paddle", threshold=0.5)
    scores = lambda **kw: [b["score"] for b in next(pipe.predict(seg_images["a"], **kw))["boxes"]]  # noqa: E731
    assert scores() == pytest.approx([0.95, 0.70])
    assert scores(threshold=0.8) == pytest.approx([0.95])
    assert scores(threshold=0.1) == pytest.approx([0.95, 0.70, 0.40])
    # per class: class 2 needs 0.9, class 1 0.3, unnamed classes PaddleX's 0.5
    assert scores(threshold={2: 0.9, "1": 0.3}) == pytest.approx([0.95, 0.40])


def test_json_carries_full_frame_rle(seg_models, seg_images, tmp_path):
    r = next(make(seg_models["maskbox"], "paddle").predict(seg_images["a"]))
    path = r.save_to_json(str(tmp_path))
    assert os.path.basename(path) == "a_res.json"
    body = json.load(open(path))["res"]
    assert set(body) == {"input_path", "page_index", "boxes", "masks"}
    assert len(body["masks"]) == len(body["boxes"]) == 2
    for rle, mask, box in zip(body["masks"], r["masks"], body["boxes"]):
        assert rle["size"] == [120, 200] and isinstance(rle["counts"], str)
        decoded = decode_rle(rle)
        assert (decoded == mask).all() and (decoded == box_mask(box["coordinate"], 120, 200)).all()
    cols = r.object_records()
    assert cols[0]["mask_height"] == 120 and cols[0]["mask_width"] == 200 and cols[0]["mask_counts"] == body["masks"][0]["counts"]


def test_save_to_img_overlays_masks(seg_models, seg_images, tmp_path):
    r = next(make(seg_models["maskbox"], "paddle").predict(seg_images["a"]))
    path = r.save_to_img(str(tmp_path))
    assert path.endswith("a_res.jpg")
    drawn = r.render().astype(int)
    src = r.image.astype(int)
    inner = r["masks"][0].copy()
    inner[:, : int(r["boxes"][0]["coordinate"][0]) + 4] = False  # away from box outline and caption
    inner[: int(r["boxes"][0]["coordinate"][1]) + 12] = False
    assert np.abs(drawn[inner] - src[inner]).mean() > 20  # coloured
    below = int(max(b["coordinate"][3] for b in r["boxes"])) + 3  # nothing is drawn below the lowest box
    assert (drawn[below:] == src[below:]).all()
    assert cv2.imread(path).shape == r.image.shape


def test_bad_input_is_a_result_and_the_run_goes_on(seg_models, seg_images):
    results = list(make(seg_models["maskbox"], "paddle", batch_size=2).predict([seg_images["a"], seg_images["bad"], seg_images["b"]]))
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error_type == "decode_failed" and results[1].input_path == seg_images["bad"]


def test_detector_without_masks_fails_clearly(seg_images):
    require_shared()
    r = next(make(str(PICODET_PADDLE), "paddle").predict(seg_images["a"]))
    assert not r.ok and r.error_type == "inference_failed" and "without masks" in r.error_message


def test_cli(seg_models, seg_images, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(
        ["--pipeline", "instance_segmentation", "--model_dir", seg_models["maskbox"], "--input", seg_images["a"],
         "--save_path", str(out), "--threshold", "0.3", "--no_progress", "--quiet"]
    )
    assert code == 0
    body = json.load(open(out / "a_res.json"))["res"]
    assert len(body["boxes"]) == 3 and len(body["masks"]) == 3
    assert (out / "a_res.jpg").is_file()
    code = cli_main(["--pipeline", "instance_segmentation", "--model_dir", seg_models["maskbox"], "--input", seg_images["dir"], "--no_progress", "--quiet"])
    assert code == 1  # the corrupt image fails, the others are predicted
    assert "zz_bad.jpg" in capsys.readouterr().err
