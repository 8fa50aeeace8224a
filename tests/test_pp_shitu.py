"""PP-ShiTuV2 pipeline on generated format-faithful models: detection, features, search, CLI."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import yaml

from pxflow.flows.cli import main as pxflow
from pxflow.pipelines.ops.preprocess import CropImage, NormalizeImage, Preprocessor, ResizeImage, Sample, from_transform_ops
from pxflow.pipelines.predictors.image_feature import FeaturePredictor
from pxflow.pipelines.retrieval import IndexData, build_index
from tests.support.shitu_models import make_pipeline, shitu_models, shitu_pipeline  # noqa: F401 (fixtures)

WHITE = (255, 255, 255)


def canvas(h: int = 300, w: int = 400, colour=WHITE) -> np.ndarray:
    return np.full((h, w, 3), colour, np.uint8)


def red_on_white() -> np.ndarray:
    img = canvas()
    img[60:200, 100:300] = (0, 0, 255)
    return img


def textured(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (256, 192), interpolation=cv2.INTER_NEAREST)


@pytest.fixture(scope="module")
def gallery():
    """Synthetic gallery: plain colours and textures, each labelled by what it is."""
    images = [canvas(colour=(0, 0, 255)), canvas(colour=(255, 0, 0)), canvas(colour=(0, 200, 0)), textured(1), textured(2)]
    return images, ["red", "blue", "green", "texture one", "texture two"]


# ---------------------------------------------------------------- preprocessing ops

def test_paddleclas_ops():
    img = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    assert ResizeImage(size=[30, 20])(Sample.from_bgr(img)).img.shape == (20, 30, 3)  # size is [w, h]
    assert ResizeImage(resize_short=80)(Sample.from_bgr(img)).img.shape == (80, 120, 3)
    crop = CropImage(size=[20, 10])(Sample.from_bgr(img)).img
    assert np.array_equal(crop, img[15:25, 20:40])
    assert np.allclose(NormalizeImage(scale="1.0/255.0", mean=[0, 0, 0], std=[1, 1, 1])(Sample.from_bgr(img)).img, img[..., ::-1] / 255.0)
    ops = from_transform_ops([{"DecodeImage": {"to_rgb": True}}, {"ResizeImage": {"size": 8, "return_numpy": False}}, {"ToCHWImage": None}])
    assert ops == [{"type": "ResizeImage", "size": 8}, {"type": "ToCHWImage"}]
    assert Preprocessor.from_config(ops)(img).img.shape == (3, 8, 8)


# ---------------------------------------------------------------- models

def test_mainbody_detector_finds_the_object_and_nothing_on_a_blank_image(shitu_pipeline):
    det = shitu_pipeline.det_model
    (box,), blank = det.detect([red_on_white(), canvas()], threshold=0.5)
    assert box["label"] == "mainbody" and box["score"] == pytest.approx(0.9)
    assert np.allclose(box["coordinate"], [100, 60, 300, 200], atol=2)  # the red rectangle, in original pixels
    assert blank == []


def test_feature_batches_give_the_same_vectors_as_single_images(shitu_models, gallery):
    images, _ = gallery
    one = FeaturePredictor(model_dir=shitu_models["rec"], batch_size=1)
    four = FeaturePredictor(model_dir=shitu_models["rec"], batch_size=4)
    single = np.concatenate([one.embed([img]) for img in images[:4]])
    batched = four.embed(images[:4])
    assert batched.shape == (4, 512)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert np.allclose(batched, single, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])  # different images, different vectors


# ---------------------------------------------------------------- pipeline

def test_predict_recognises_boxes_and_whole_images(shitu_pipeline, gallery):
    images, labels = gallery
    index = shitu_pipeline.build_index(images, labels, metric_type="IP", index_type="Flat")
    assert len(index) == 5 and index.meta.model["sha256"]
    results = list(shitu_pipeline.predict([red_on_white(), canvas(colour=(255, 0, 0)), textured(2)], index=index))
    (red,), (blue,), (tex,) = (r["boxes"] for r in results)
    assert red["labels"][0] == "red" and red["rec_scores"][0] > 0.99 and red["det_score"] == pytest.approx(0.9)
    assert np.allclose(red["coordinate"], [100, 60, 300, 200], atol=2)
    # nothing detected: the whole image is one box with det_score 0 (PaddleX)
    assert blue == {"labels": blue["labels"], "rec_scores": blue["rec_scores"], "det_score": 0, "coordinate": [0, 0, 400, 300]}
    assert blue["labels"][0] == "blue" and blue["rec_scores"][0] == pytest.approx(1.0, abs=1e-4)
    assert tex["labels"][0] == "texture two" and len(tex["labels"]) <= 5
    assert results[0].json["res"]["boxes"][0]["labels"][0] == "red"
    assert results[0].render().shape == (300, 400, 3) and results[0].img["res"].size == (400, 300)


def test_thresholds_topk_and_l2(shitu_pipeline, gallery, tmp_path):
    images, labels = gallery
    ip = shitu_pipeline.build_index(images, labels, metric_type="IP", index_type="HNSW32")
    (box,) = next(shitu_pipeline.predict(images[0], index=ip, rec_threshold=1.01))["boxes"]
    assert box["labels"] == [None] and box["rec_scores"] == [None]
    (box,) = next(shitu_pipeline.predict(images[0], index=ip, rec_threshold=-1, rec_topk=3))["boxes"]
    assert box["labels"][0] == "red" and len(box["labels"]) == 3
    l2 = shitu_pipeline.build_index(images, labels, metric_type="L2", index_type="IVF")
    l2.save(str(tmp_path / "l2"))
    (box,) = next(shitu_pipeline.predict(images[0], index=str(tmp_path / "l2"), rec_threshold=0.05))["boxes"]
    assert box["labels"] == ["red"] and box["rec_scores"][0] < 1e-4  # near match kept, far ones rejected


def test_bad_inputs_and_missing_index(shitu_pipeline, gallery, tmp_path):
    images, labels = gallery
    index = build_index(shitu_pipeline.rec_model.embed(images), labels, "Flat", "IP")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    results = list(shitu_pipeline.predict([str(broken), images[1]], index=index))
    assert not results[0].ok and results[0].error_type in ("decode_failed", "unsupported_format")
    assert results[1].ok and results[1]["boxes"][0]["labels"][0] == "blue"
    with pytest.raises(ValueError, match="needs an index"):
        list(shitu_pipeline.predict(images[0]))
    with pytest.raises(ValueError, match="8-d vectors"):
        list(shitu_pipeline.predict(images[0], index=build_index(np.eye(8, dtype=np.float32), list("abcdefgh"), "Flat", "IP")))


def test_index_from_config_and_none_string(shitu_pipeline, gallery, tmp_path):
    images, labels = gallery
    shitu_pipeline.build_index(images, labels, "IP", "Flat").save(str(tmp_path / "idx"))
    pipe = make_pipeline(index=str(tmp_path / "idx"), rec_topk=1)
    (box,) = next(pipe.predict(images[2]))["boxes"]
    assert box["labels"] == ["green"]
    assert make_pipeline(index="None").index is None  # PaddleX's YAML says `index: None`


# ---------------------------------------------------------------- CLI

def test_index_cli_build_append_remove_and_predict(shitu_models, gallery, tmp_path, capsys):
    images, labels = gallery
    folder = tmp_path / "gallery"
    (folder / "imgs").mkdir(parents=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / "imgs" / f"{i}.png"), img)
    lines = [f"imgs/{i}.png\t{lab}" for i, lab in enumerate(labels[:3])] + ["imgs/missing.png\tghost"]
    (folder / "labels.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "more.txt").write_text(f"imgs/3.png {labels[3]}\nimgs/4.png {labels[4]}\n", encoding="utf-8")
    config = tmp_path / "shitu.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline_name": "PP-ShiTuV2",
                "rec_topk": 2,
                "SubModules": {
                    "Detection": {"model_name": "PP-ShiTuV2_det", "model_dir": shitu_models["det"]},
                    "Recognition": {"model_name": "PP-ShiTuV2_rec", "model_dir": shitu_models["rec"]},
                },
            }
        ),
        encoding="utf-8",
    )
    idx = str(tmp_path / "idx")
    common = ["--pipeline", str(config)]
    assert pxflow(["index", "build", *common, "--gallery", str(folder / "labels.txt"), "--out", idx, "--index_type", "IVF"]) == 1
    assert "missing.png: not_found" in capsys.readouterr().err  # skipped and reported, not fatal
    assert sorted(os.listdir(idx)) == ["id_map.yaml", "index_info.yaml", "pxflow_index.json", "vector.index"]
    assert pxflow(["index", "append", *common, "--gallery", str(folder / "more.txt"), "--index", idx]) == 0
    assert IndexData.load(idx).id_map == {0: "red", 1: "blue", 2: "green", 3: "texture one", 4: "texture two"}
    assert pxflow(["index", "remove", "--index", idx, "--label", "blue", "--ids", "4"]) == 0
    assert IndexData.load(idx).id_map == {0: "red", 2: "green", 3: "texture one"}
    capsys.readouterr()
    assert pxflow(["index", "info", "--index", idx]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vectors"] == 3 and info["index_type"] == "IVF" and info["structure"] == "Flat"
    assert pxflow(["--pipeline", str(config), "--input", str(folder / "imgs" / "2.png"), "--index", idx, "--no_progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["res"]["boxes"][0]["labels"][0] == "green"
    assert pxflow(["index", "remove", "--index", idx]) == 2
    assert pxflow(["index", "info", "--index", str(tmp_path / "nope")]) == 2
