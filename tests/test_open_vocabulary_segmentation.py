"""open_vocabulary_segmentation (SAM) on format-faithful test models: official and split layouts, Paddle and ONNX."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import yaml

from pxflow.flows.cli.predict import main as cli_main
from pxflow.pipelines.ops.masks import box_mask, decode_rle
from pxflow.pipelines.registry import create_pipeline
from tests.conftest import COCO_MINI, PICODET_PADDLE, require_shared
from tests.support.seg_models import build_script, seg_images, seg_models  # noqa: F401  (fixtures)
from tests.support.masks import iou

B = build_script()
BACKENDS = ["paddle", "onnxruntime"]
LAYOUTS = ["", "_split"]


def sam_config(models: dict[str, str], layout: str = "", **px) -> dict:
    return {
        "SubModules": {
            "BoxPromptSegmentation": {"model_dir": models[f"sam_box{layout}"]},
            "PointPromptSegmentation": {"model_dir": models[f"sam_point{layout}"]},
        },
        "Pxflow": px,
    }


def make(models, layout="", backend="paddle", **px):
    return create_pipeline("open_vocabulary_segmentation", config=sam_config(models, layout, **px), backend=backend)



class CallCounter:
    """Counts calls to a real backend's ``run`` (a spy: the model still runs)."""

    def __init__(self, backend):
        self.calls, self._run = 0, backend.run
        backend.run = self

    def __call__(self, inputs):
        self.calls += 1
        return self._run(inputs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_box_prompts_give_the_box_region(seg_models, seg_images, layout, backend):
    boxes = [[10, 20, 100, 80], [120.5, 5.25, 199, 119], [0, 0, 200, 120]]
    r = next(make(seg_models, layout, backend).predict(seg_images["a"], prompt_type="box", prompt=boxes))
    assert r.ok and set(r.keys()) == {"input_path", "page_index", "prompts", "masks", "mask_infos"}
    assert r["prompts"] == {"box_prompt": [[float(v) for v in b] for b in boxes]}
    assert r["mask_infos"] == [{"label": "box_prompt", "prompt": [float(v) for v in b]} for b in boxes]
    assert r["masks"].shape == (3, 120, 200)
    for mask, box in zip(r["masks"], boxes):
        # the model answers on a 4-px grid of the 1024 frame (~0.8 px here), so edges may move by a pixel
        assert iou(mask, box_mask(box, 120, 200)) > 0.95
        assert not (mask & ~cv2.dilate(box_mask(box, 120, 200).astype(np.uint8), np.ones((5, 5))).astype(bool)).any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_point_prompts_give_a_disc_under_each_point(seg_models, seg_images, layout, backend):
    pipe = make(seg_models, layout, backend)
    points = [[50, 60], [150.5, 30]]  # two points: the official graph takes one per call
    r = next(pipe.predict(seg_images["a"], prompt_type="point", prompt=points))
    radius = B.SAM_POINT_RADIUS * 200 / 1024  # 1024-frame radius in original pixels
    yy, xx = np.mgrid[:120, :200] + 0.5
    for mask, (px, py) in zip(r["masks"], points):
        disc = (xx - px) ** 2 + (yy - py) ** 2 <= radius**2
        assert mask[int(py), int(px)] and iou(mask, disc) > 0.9
        assert abs(mask.sum() - math.pi * radius**2) < 0.1 * math.pi * radius**2
    assert r["mask_infos"][1] == {"label": "point_prompt", "prompt": [150.5, 30.0]}


def test_backends_and_layouts_agree(seg_models, seg_images):
    prompt = [[30, 10, 140, 100]]
    masks = [next(make(seg_models, lay, be).predict(seg_images["c"], prompt=prompt))["masks"] for lay in LAYOUTS for be in BACKENDS]
    for other in masks[1:]:
        assert (other == masks[0]).all()


def test_split_model_encodes_each_image_once_for_any_number_of_prompts(seg_models, seg_images):
    pipe = make(seg_models, "_split", "paddle", max_prompts_per_call=4)
    sam = pipe.models["box"].get()
    encoder, decoder = CallCounter(sam.encoder), CallCounter(sam.decoder)
    prompts = [[i, i, i + 40, i + 30] for i in range(0, 100, 10)]  # 10 prompts
    results = list(pipe.predict([seg_images["a"], seg_images["c"]], prompt=prompts))
    assert [len(r["masks"]) for r in results] == [10, 10]
    assert encoder.calls == 2  # once per image
    assert decoder.calls == 2 * 3  # ceil(10 / 4) per image
    official = make(seg_models, "", "paddle")
    whole = CallCounter(official.models["point"].get().whole)
    next(official.predict(seg_images["a"], prompt_type="point", prompt=[[5, 5], [9, 9], [20, 20]]))
    assert whole.calls == 3  # the official point graph takes one point per run


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": [[1, 2, 3]]}, "needs 4 numbers"),
        ({"prompt": [[1, 2, 3, 4], [1, 2, 3]]}, "4 numbers"),
        ({"prompt": [[1, 2, 30, float("nan")]]}, "not finite"),
        ({"prompt": []}, "empty"),
        ({"prompt": [[-1, 2, 30, 40]]}, "outside the image"),
        ({"prompt": [[30, 2, 10, 40]]}, "x1 < x2"),
        ({"prompt": [["a", 2, 30, 40]]}, "numbers"),
        ({"prompt_type": "point", "prompt": [[1, 2, 3, 4]]}, "needs 2 numbers"),
        ({"prompt_type": "mask", "prompt": [[1, 2]]}, "prompt_type"),
        ({}, "needs prompt="),
    ],
)
def test_invalid_prompts_fail_before_any_input_is_read(seg_models, kwargs, message):
    pipe = make(seg_models, "_split")
    with pytest.raises(ValueError, match=message):
        next(pipe.predict("/nonexistent/image.jpg", **kwargs))


def test_prompt_outside_one_image_fails_that_image_only(seg_models, seg_images):
    prompt = [[100, 60, 140, 100]]  # inside a (200x120) and c (150x150), outside b (60x90)
    results = list(make(seg_models, "_split").predict([seg_images["a"], seg_images["b"], seg_images["c"]], prompt=prompt))
    assert [r.ok for r in results] == [True, False, True]
    bad = results[1]
    assert bad.error_type == "invalid_prompt" and bad.input_path == seg_images["b"]
    assert "outside the 60x90 image" in bad.error_message


def test_json_rle_and_image(seg_models, seg_images, tmp_path):
    r = next(make(seg_models).predict(seg_images["a"], prompt_type="point", prompt=[[100, 60]]))
    body = json.load(open(r.save_to_json(str(tmp_path))))["res"]
    assert body["prompts"] == {"point_prompt": [[100.0, 60.0]]}
    assert body["masks"][0]["size"] == [120, 200]
    assert (decode_rle(body["masks"][0]) == r["masks"][0]).all()
    path = r.save_to_img(str(tmp_path))
    drawn = cv2.imread(path).astype(int)
    assert drawn.shape == (120, 200, 3)
    changed = np.abs(r.render().astype(int) - r.image.astype(int)).sum(axis=2) > 0
    assert changed[r["masks"][0]].mean() > 0.9 and not changed[~cv2.dilate(r["masks"][0].astype(np.uint8), np.ones((9, 9))).astype(bool)].any()


def test_models_load_on_first_use(seg_models, seg_images):
    cfg = sam_config(seg_models, "_split")
    cfg["SubModules"]["PointPromptSegmentation"]["model_dir"] = "/nonexistent/SAM-H_point"
    pipe = create_pipeline("open_vocabulary_segmentation", config=cfg)
    assert next(pipe.predict(seg_images["a"], prompt=[[1, 1, 50, 50]])).ok  # the point model is never needed
    with pytest.raises(Exception, match="not found"):
        next(pipe.predict(seg_images["a"], prompt_type="point", prompt=[[1, 1]]))


def chained(models, detector: dict, **extra) -> object:
    return make(models, "_split", prompts_from={"pipeline": "object_detection", "config": {"SubModules": {"ObjectDetection": detector}}, **extra})


def test_detector_boxes_become_box_prompts(seg_models, seg_images):
    pipe = chained(seg_models, {"model_dir": seg_models["maskbox"], "batch_size": 2})
    results = list(pipe.predict([seg_images["a"], seg_images["bad"], seg_images["c"]]))
    assert [r.ok for r in results] == [True, False, True]
    for r in (results[0], results[2]):
        h, w = r.image.shape[:2]
        labels = [info["source"]["label"] for info in r["mask_infos"]]
        assert labels == ["person", "car"]  # the two MaskBox boxes above the detector's 0.5
        for mask, info in zip(r["masks"], r["mask_infos"]):
            assert info["label"] == "box_prompt"
            assert iou(mask, box_mask(info["prompt"], h, w)) > 0.95
    only_cars = chained(seg_models, {"model_dir": seg_models["maskbox"]}, labels=["car"], threshold=0.3)
    r = next(only_cars.predict(seg_images["a"]))
    assert [i["source"]["cls_id"] for i in r["mask_infos"]] == [2]
    nothing = chained(seg_models, {"model_dir": seg_models["maskbox"]}, threshold=0.999)
    encoder = CallCounter(nothing.models["box"].get().encoder)
    r = next(nothing.predict(seg_images["a"]))
    assert r.ok and r["masks"].shape == (0, 120, 200) and r.json["res"]["masks"] == [] and r["mask_infos"] == []
    assert encoder.calls == 0  # no boxes: SAM is not run at all
    with pytest.raises(ValueError, match="boxes"):
        next(pipe.predict(seg_images["a"], prompt_type="point"))
    explicit = next(pipe.predict(seg_images["a"], prompt=[[1, 1, 20, 20]]))  # an explicit prompt wins
    assert explicit["prompts"] == {"box_prompt": [[1.0, 1.0, 20.0, 20.0]]}


def test_real_detector_chained_on_a_coco_image(seg_models):
    require_shared()
    image = str(sorted((COCO_MINI / "images").glob("*.jpg"))[0])
    pipe = chained(seg_models, {"model_dir": str(PICODET_PADDLE)}, threshold=0.5)
    det = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_PADDLE)}}})
    boxes = next(det.predict(image, threshold=0.5))["boxes"]
    r = next(pipe.predict(image))
    assert len(boxes) > 0 and [i["prompt"] for i in r["mask_infos"]] == [b["coordinate"] for b in boxes]
    assert len(r["masks"]) == len(boxes) and all(m.any() for m in r["masks"])


def test_cli_prompts(seg_models, seg_images, tmp_path, capsys):
    cfg = tmp_path / "sam.yaml"
    cfg.write_text(yaml.safe_dump({"pipeline_name": "open_vocabulary_segmentation", **sam_config(seg_models, "_split")}))
    out = tmp_path / "out"
    args = ["--pipeline", str(cfg), "--input", seg_images["a"], "--save_path", str(out), "--no_progress", "--quiet"]
    assert cli_main(args + ["--prompt_type", "box", "--prompt", "[[10,20,100,80],[0,0,50,50]]"]) == 0
    body = json.load(open(out / "a_res.json"))["res"]
    assert len(body["masks"]) == 2 and (out / "a_res.jpg").is_file()
    assert cli_main(args + ["--prompt_type", "point", "--prompt", "[[10,20,30]]"]) == 2
    assert "needs 2 numbers" in capsys.readouterr().err
    assert cli_main(args + ["--prompt_type", "point", "--prompt", "[[10,500]]"]) == 1
    assert "invalid_prompt" in capsys.readouterr().err
