"""The detection pipelines on the real PicoDet-XS and real COCO images, through the CLI and the API."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pxflow.pipelines import create_pipeline
from pxflow.pipelines.evaluation import coco_eval, detections_from_boxes, load_coco
from tests.support.s3_server import free_port
from tests.conftest import COCO_MINI, LEGACY_MODEL, PICODET_ONNX, PICODET_PADDLE, require_shared

EXPECTED_MAP = 0.279  # measured by PaddleX 3.7.2 on the same model and images (../shared/README.md)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pxflow.flows", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def _pipeline_yaml(tmp: Path, model_dir: Path, threshold: float = 0.001, name: str = "object_detection") -> Path:
    sub = "ObjectDetection" if name == "object_detection" else "SmallObjectDetection"
    path = tmp / f"{name}_{model_dir.name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "pipeline_name": name,
                "SubModules": {sub: {"module_name": name, "model_name": "PicoDet-XS", "model_dir": str(model_dir), "batch_size": 1, "threshold": threshold}},
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory):
    """Run the CLI once per backend over the 79 COCO images at threshold 0.001."""
    require_shared()
    tmp = tmp_path_factory.mktemp("cli")
    outputs = {}
    for model_dir in (PICODET_PADDLE, PICODET_ONNX):
        out = tmp / model_dir.name
        proc = _cli("--pipeline", str(_pipeline_yaml(tmp, model_dir)), "--input", str(COCO_MINI / "images"),
                    "--device", "cpu", "--save_path", str(out), "--quiet")
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[model_dir.name] = out
    return outputs


def _load_results(out: Path) -> dict[str, list[dict]]:
    results = {}
    for path in sorted(out.glob("*_res.json")):
        res = json.loads(path.read_text())["res"]
        results[os.path.basename(res["input_path"])] = res["boxes"]
    return results


@pytest.mark.parametrize("model", [PICODET_PADDLE.name, PICODET_ONNX.name])
def test_cli_writes_79_results_with_expected_map(cli_outputs, model):
    out = cli_outputs[model]
    assert len(list(out.glob("*_res.json"))) == 79
    assert len(list(out.glob("*_res.jpg"))) == 79
    coco = load_coco(str(COCO_MINI / "instances_val2017.json"))
    results = _load_results(out)
    stats = coco_eval(coco, detections_from_boxes(results.items(), coco))
    assert abs(stats[0] - EXPECTED_MAP) <= 0.005, stats[0]


def test_backends_agree_within_one_pixel(cli_outputs):
    paddle = _load_results(cli_outputs[PICODET_PADDLE.name])
    onnx = _load_results(cli_outputs[PICODET_ONNX.name])
    assert paddle.keys() == onnx.keys()
    worst = 0.0
    for name, boxes in paddle.items():
        # compare confident boxes (tiny score noise may reorder or cut boxes near 0.001)
        a = [b for b in boxes if b["score"] > 0.05]
        b = [x for x in onnx[name] if x["score"] > 0.05]
        assert len(a) == len(b), name
        for box in a:
            same_class = [o for o in b if o["cls_id"] == box["cls_id"]]
            assert same_class, (name, box)
            match = min(same_class, key=lambda o: max(abs(p - q) for p, q in zip(o["coordinate"], box["coordinate"])))
            assert abs(match["score"] - box["score"]) < 1e-3
            worst = max(worst, max(abs(p - q) for p, q in zip(match["coordinate"], box["coordinate"])))
    assert worst < 1.0, worst


def test_saved_image_has_boxes_drawn(cli_outputs):
    out = cli_outputs[PICODET_ONNX.name]
    original = cv2.imread(str(COCO_MINI / "images" / "000000000139.jpg"))
    drawn = cv2.imread(str(out / "000000000139_res.jpg"))
    assert drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original.astype(int)).mean() > 1.0  # boxes were painted


def test_api_matches_paddlex_result_shape_and_thresholds():
    require_shared()
    pipe = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_ONNX)}}})
    image = str(COCO_MINI / "images" / "000000000139.jpg")
    (res,) = list(pipe.predict(image))
    body = res.json["res"]
    assert set(body) == {"input_path", "page_index", "boxes"} and body["input_path"] == image
    assert body["boxes"] and all(b["score"] > 0.5 for b in body["boxes"])  # draw_threshold 0.5 from inference.yml
    assert set(body["boxes"][0]) == {"cls_id", "label", "score", "coordinate"}
    h, w = cv2.imread(image).shape[:2]
    for b in body["boxes"]:
        x1, y1, x2, y2 = b["coordinate"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    (low,) = list(pipe.predict(image, threshold=0.1))
    assert len(low["boxes"]) > len(body["boxes"])
    person_only = {b["cls_id"]: 1.0 for b in low["boxes"] if b["cls_id"] != 0}  # scores never exceed 1
    (per_class,) = list(pipe.predict(image, threshold={**person_only, 0: 0.1}))
    assert per_class["boxes"] and {b["cls_id"] for b in per_class["boxes"]} == {0}


def test_array_input_gives_same_boxes_as_path_and_batching_is_invariant():
    require_shared()
    images = sorted((COCO_MINI / "images").glob("*.jpg"))[:6]
    single = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_PADDLE), "threshold": 0.3}}})
    batched = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_PADDLE), "threshold": 0.3, "batch_size": 4}}})
    by_path = [r["boxes"] for r in single.predict([str(p) for p in images])]
    by_array = [r["boxes"] for r in single.predict([cv2.imread(str(p)) for p in images])]
    by_batch = [r["boxes"] for r in batched.predict([str(p) for p in images])]
    for a, b, c in zip(by_path, by_array, by_batch):
        assert [x["cls_id"] for x in a] == [x["cls_id"] for x in b] == [x["cls_id"] for x in c]
        np.testing.assert_allclose([x["coordinate"] for x in a], [x["coordinate"] for x in b], atol=1e-3)
        np.testing.assert_allclose([x["coordinate"] for x in a], [x["coordinate"] for x in c], atol=1e-2)


def test_http_input(tmp_path):
    require_shared()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(COCO_MINI / "images"), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pipe = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_ONNX)}}})
        url = f"http://127.0.0.1:{server.server_address[1]}/000000000139.jpg"
        (remote,) = list(pipe.predict(url))
        (local,) = list(pipe.predict(str(COCO_MINI / "images" / "000000000139.jpg")))
        assert remote["input_path"] == url
        assert remote["boxes"] == local["boxes"]
    finally:
        server.shutdown()


def test_legacy_model_runs_and_short_label_list_does_not_crash(tmp_path):
    require_shared()
    pipe = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(LEGACY_MODEL), "threshold": 0.0}}})
    results = list(pipe.predict(str(COCO_MINI / "images" / "000000000139.jpg")))
    assert results[0].ok and isinstance(results[0]["boxes"], list)
    # a model whose label_list is shorter than its class ids: labels fall back to class_<id>
    short = tmp_path / "short_labels"
    shutil.copytree(PICODET_ONNX, short)
    cfg = yaml.safe_load((short / "inference.yml").read_text())
    cfg["label_list"] = cfg["label_list"][:1]
    (short / "inference.yml").write_text(yaml.safe_dump(cfg))
    pipe = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(short), "threshold": 0.05}}})
    (res,) = list(pipe.predict(str(COCO_MINI / "images" / "000000000139.jpg")))
    labels = {(b["cls_id"], b["label"]) for b in res["boxes"]}
    assert any(cid > 0 and label == f"class_{cid}" for cid, label in labels)



def test_bad_inputs_are_reported_and_the_rest_still_run(tmp_path):
    require_shared()
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((COCO_MINI / "images").glob("*.jpg"))[:3]
    for p in good:
        shutil.copy(p, folder / p.name)
    (folder / "empty.jpg").write_bytes(b"")
    data = good[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("not an image\n")
    out = tmp_path / "out"
    proc = _cli("--pipeline", str(_pipeline_yaml(tmp_path, PICODET_ONNX, 0.5)), "--input", str(folder), "--save_path", str(out), "--quiet")
    assert proc.returncode == 1
    for name in ("empty.jpg", "truncated.jpg", "notes.jpg"):
        assert name in proc.stderr
    assert "3 of 6 inputs failed" in proc.stderr
    assert sorted(p.name for p in out.glob("*_res.json")) == sorted(f"{p.stem}_res.json" for p in good)

    pipe = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_ONNX)}}})
    missing = str(tmp_path / "nope.jpg")
    unreachable = f"http://127.0.0.1:{free_port()}/x.jpg"
    results = list(pipe.predict([missing, str(good[0]), unreachable]))
    assert [r.ok for r in results] == [False, True, False]
    assert results[0].error_type == "not_found" and results[0].input_path == missing
    assert results[2].error_type == "download_failed" and unreachable in str(results[2].json)
    with pytest.raises(Exception, match="nope.jpg"):
        list(pipe.predict(missing, on_error="raise"))


def test_get_pipeline_config_round_trips(tmp_path):
    proc = _cli("--get_pipeline_config", "object_detection", "--save_path", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load((tmp_path / "object_detection.yaml").read_text())
    assert cfg["pipeline_name"] == "object_detection"
    assert set(cfg["SubModules"]["ObjectDetection"]) >= {"module_name", "model_name", "model_dir", "batch_size", "threshold"}
    assert _cli("--get_pipeline_config", "no_such_pipeline").returncode == 2


@pytest.mark.slow
def test_sliced_inference_finds_small_objects_the_full_image_run_misses():
    require_shared()
    coco = load_coco(str(COCO_MINI / "instances_val2017.json"))
    scores = {}
    for name, slicing in (("full", None), ("sliced", {"size": 320, "overlap": 0.25})):
        pipe = create_pipeline(
            "small_object_detection",
            config={"SubModules": {"SmallObjectDetection": {"model_dir": str(PICODET_ONNX), "threshold": 0.001}}, "Pxflow": {"slice": slicing}},
        )
        results = [(r["input_path"], r["boxes"]) for r in pipe.predict(str(COCO_MINI / "images"))]
        scores[name] = coco_eval(coco, detections_from_boxes(results, coco))
    # AP for small objects (area < 32^2) rises clearly; overall mAP must not fall
    assert scores["sliced"][3] > scores["full"][3] + 0.02, (scores["sliced"][3], scores["full"][3])
    assert scores["sliced"][0] >= scores["full"][0]
