"""The seams other work builds on: one namespace, registries, results that own their rows,
model identity from the pipeline, one way to apply overrides, bulk SAM through ``annotate``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pxflow.flows.options import AnnotateOptions
from pxflow.pipelines.config import load_config
from pxflow.pipelines.overrides import apply_overrides
from pxflow.pipelines.registry import pipeline_class, pipeline_names
from pxflow.pipelines.results import BaseResult
from tests.support.annotate_helpers import read_table
from tests.conftest import PICODET_ONNX
from tests.support.seg_models import seg_images, seg_models  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent


# -- one namespace ------------------------------------------------------------------------------
def test_installed_under_pxflow_only(tmp_path):
    """From a folder outside the repository, the generic names are not importable; pxflow.* is."""
    probe = (
        "import importlib, json\n"
        "out = {}\n"
        "for name in ('tasks', 'flows', 'pipelines', 'configs', 'pxflow.flows.annotate', 'pxflow.tasks.shards'):\n"
        "    try:\n"
        "        importlib.import_module(name); out[name] = True\n"
        "    except ImportError:\n"
        "        out[name] = False\n"
        "from pxflow import create_pipeline\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "tasks": False, "flows": False, "pipelines": False, "configs": False,
        "pxflow.flows.annotate": True, "pxflow.tasks.shards": True,
    }


# -- results own their records -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["object_detection", "small_object_detection", "instance_segmentation",
                                  "open_vocabulary_segmentation", "PP-ShiTuV2"])
def test_every_registered_pipeline_result_defines_its_records(name):
    assert name in pipeline_names()
    result_class = pipeline_class(name).result_class
    assert result_class is not BaseResult, f"{name} does not say which result class it yields"
    assert result_class.object_records is not BaseResult.object_records, f"{result_class.__name__} lacks object_records()"


def _toy(tmp_path: Path):
    import tests.support.toy_classifier as toy
    from tests.support.toy_classifier.model import build

    model = build(str(tmp_path / "toy_model"))
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "black.png"), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(images / "white.png"), np.full((16, 16, 3), 255, np.uint8))
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return toy, model, images


def test_every_predictor_turns_a_batch_into_results_with_infer():
    """The predictor contract: one abstract method, ``infer(batch)``, the same name for every model type."""
    from pxflow.pipelines.predictors import Predictor
    from pxflow.pipelines.predictors.registry import PREDICTORS, predictor_class
    from tests.support.toy_classifier.predictor import ClassificationPredictor

    assert Predictor.__abstractmethods__ == {"from_submodule", "infer"}
    classes = {predictor_class(module) for module in PREDICTORS} | {ClassificationPredictor}
    assert {c.__name__ for c in classes} >= {"DetectionPredictor", "InstanceSegPredictor", "FeaturePredictor", "SamPredictor",
                                             "ClassificationPredictor"}
    for cls in classes:
        assert not cls.__abstractmethods__ and cls.infer is not Predictor.infer, cls

    class Forgetful(Predictor):
        module_names = ("forgetful",)

        @classmethod
        def from_submodule(cls, sub, settings, device):
            return cls()

    with pytest.raises(TypeError, match="infer"):  # fails when built, not when a pipeline calls it
        Forgetful.from_submodule({}, None, "cpu")


def test_a_toy_pipeline_registered_outside_pxflow_is_annotated(prefect_server, tmp_path):
    """A whole-image classifier with neither boxes nor masks: its own folder is all it takes."""
    from pxflow.flows.annotate import annotate

    toy, model, images = _toy(tmp_path)
    result = annotate(input=str(images), output=str(tmp_path / "out"),
                      options=AnnotateOptions(pipeline=toy.CONFIG, model_dir=model, shard_size=2))
    assert result["complete"] and result["rows_images"] == 3 and result["pipeline"] == "toy_classifier"
    rows = {Path(r["image_uri"]).name: r for r in read_table(str(tmp_path / "out" / "images")).to_pylist()}
    assert rows["broken.jpg"]["status"] == "error" and rows["black.png"]["num_objects"] == 1
    objects = {Path(r["image_uri"]).name: r for r in read_table(str(tmp_path / "out" / "objects")).to_pylist()}
    expected_score = np.exp(3) / (np.exp(3) + np.exp(-3))  # channel means -1 (black) / +1 (white), weights -+1
    assert (objects["black.png"]["label"], objects["black.png"]["cls_id"]) == ("dark", 0)
    assert (objects["white.png"]["label"], objects["white.png"]["cls_id"]) == ("bright", 1)
    assert objects["white.png"]["score"] == pytest.approx(expected_score, rel=1e-5)
    assert objects["black.png"]["x1"] is None and objects["black.png"]["mask_counts"] is None
    assert {r["model_name"] for r in objects.values()} == {"ToyClassifier"}


# -- identity ------------------------------------------------------------------------------------
def _sam_config(models: dict[str, str], layout: str = "", **px) -> dict:
    config = load_config("open_vocabulary_segmentation")
    config["SubModules"]["BoxPromptSegmentation"]["model_dir"] = models[f"sam_box{layout}"]
    config["SubModules"]["PointPromptSegmentation"]["model_dir"] = models[f"sam_point{layout}"]
    config["Pxflow"].update(px)
    return config


def test_identity_covers_split_sam_and_only_the_models_used(seg_models, tmp_path, monkeypatch):
    cls = pipeline_class("open_vocabulary_segmentation")
    split = cls.identity(_sam_config(seg_models, "_split"), {"prompt_type": "box"})
    whole = cls.identity(_sam_config(seg_models), {"prompt_type": "box"})
    (model,) = split.models
    assert model.role == "BoxPromptSegmentation" and len(model.sha256) == 64
    assert model.sha256 != whole.models[0].sha256
    # the point model is an official name that cannot be resolved here: a box run must not touch it
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PXFLOW_MODEL_BASE_URL", "http://127.0.0.1:9/none")
    config = _sam_config(seg_models, "_split")
    config["SubModules"]["PointPromptSegmentation"] = {"model_name": "SAM-H_point", "model_dir": None}
    assert cls.identity(config, {"prompt_type": "box"}).models == split.models
    with pytest.raises(Exception, match="SAM-H_point"):
        cls.identity(config, {"prompt_type": "point"})


def test_identity_includes_the_chained_detector(seg_models):
    cls = pipeline_class("open_vocabulary_segmentation")
    detector = {"pipeline": "object_detection", "config": {"SubModules": {"ObjectDetection": {"model_dir": seg_models["maskbox"]}}}}
    chained = cls.identity(_sam_config(seg_models, "_split", prompts_from=detector))
    assert [m.role for m in chained.models] == ["BoxPromptSegmentation", "prompts_from.ObjectDetection"]
    other = {**detector, "config": {"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_ONNX)}}}}
    changed = cls.identity(_sam_config(seg_models, "_split", prompts_from=other))
    assert changed.model_sha256 != chained.model_sha256  # a changed detector is a new annotation key
    assert chained.models[1].name == "Mask-RT-DETR-S" and changed.models[1].name == "PicoDet-XS"
    explicit = cls.identity(_sam_config(seg_models, "_split", prompts_from=detector), {"prompt": [[1, 1, 5, 5]]})
    assert [m.role for m in explicit.models] == ["BoxPromptSegmentation"]  # explicit prompts: the detector is unused


# -- overrides -----------------------------------------------------------------------------------
def test_set_paths_must_name_a_key_of_the_pipeline():
    detection = load_config("object_detection")
    with pytest.raises(ValueError, match=r"no key 'ObjectDetecton' at SubModules; did you mean 'SubModules.ObjectDetection'"):
        apply_overrides(detection, assignments=["SubModules.ObjectDetecton.threshold=0.3"])
    with pytest.raises(ValueError, match=r"did you mean 'SubModules.ObjectDetection.threshold'"):
        apply_overrides(detection, assignments=["SubModules.ObjectDetection.threshhold=0.3"])
    with pytest.raises(ValueError, match="infer_worker"):
        apply_overrides(detection, assignments=["Pxflow.infer_worker=2"])  # typed settings name it too
    # a user YAML that leaves out a documented key may still set it (the built-in YAML lists it)
    sparse = {"pipeline_name": "object_detection", "SubModules": {"ObjectDetection": {"model_dir": "/m"}}}
    assert apply_overrides(sparse, assignments=["SubModules.ObjectDetection.threshold=0.3"])["SubModules"]["ObjectDetection"]["threshold"] == 0.3


def test_model_dir_goes_to_the_pipelines_own_model():
    shitu = load_config("PP-ShiTuV2")
    with pytest.raises(ValueError, match="SubModules"):
        apply_overrides(shitu, model_dir="/models/x")  # two models: ambiguous, never "the first section"
    rec = apply_overrides(shitu, assignments=["SubModules.Recognition.model_dir=/models/rec", "rec_topk=3"])
    assert rec["SubModules"]["Recognition"]["model_dir"] == "/models/rec" and rec["rec_topk"] == 3
    assert rec["SubModules"]["Detection"]["model_dir"] is None and shitu["SubModules"]["Recognition"]["model_dir"] is None
    sam = apply_overrides(load_config("open_vocabulary_segmentation"), model_dir="/m/p", options={"prompt_type": "point"})
    assert sam["SubModules"]["PointPromptSegmentation"]["model_dir"] == "/m/p"
    assert sam["SubModules"]["BoxPromptSegmentation"]["model_dir"] is None
    det = apply_overrides(load_config("object_detection"), model_dir="/m/d", batch_size=4, settings={"backend": "paddle"})
    assert det["SubModules"]["ObjectDetection"] == {**load_config("object_detection")["SubModules"]["ObjectDetection"],
                                                    "model_dir": "/m/d", "batch_size": 4}
    assert det["Pxflow"]["backend"] == "paddle"
    with pytest.raises(ValueError, match="infer_worker"):
        apply_overrides(load_config("object_detection"), settings={"infer_worker": 2})
    with pytest.raises(ValueError, match="KEY.PATH=VALUE"):
        apply_overrides(load_config("object_detection"), assignments=["no-equals-sign"])


# -- bulk SAM through annotate -------------------------------------------------------------------
def _sam_yaml(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "sam.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_annotate_split_sam_with_chained_prompts_keeps_class_and_score(prefect_server, seg_models, seg_images, tmp_path):
    from pxflow.flows.annotate import annotate

    detector = {"pipeline": "object_detection", "config": {"SubModules": {"ObjectDetection": {"model_dir": seg_models["maskbox"]}}}}
    config = _sam_yaml(tmp_path, _sam_config(seg_models, "_split", prompts_from=detector))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "c"):
        os.symlink(seg_images[name], inputs / f"{name}.jpg")
    result = annotate(input=str(inputs), output=str(tmp_path / "out"), options=AnnotateOptions(pipeline=config))
    assert result["complete"] and result["rows_images"] == 2
    assert result["model_name"] == "SAM-H_box+Mask-RT-DETR-S"
    objects = read_table(str(tmp_path / "out" / "objects")).to_pylist()
    # the generated detector's boxes above its 0.5 threshold: person (class 0, 0.95) and car (class 2, 0.70)
    got = sorted((Path(r["image_uri"]).stem, r["label"], r["cls_id"], round(r["score"], 2), r["prompt_type"]) for r in objects)
    assert got == [("a", "car", 2, 0.7, "box"), ("a", "person", 0, 0.95, "box"),
                   ("c", "car", 2, 0.7, "box"), ("c", "person", 0, 0.95, "box")]
    assert all(r["mask_counts"] and json.loads(r["prompt"]) for r in objects)


def test_annotate_sam_prompts_per_input_from_a_manifest(prefect_server, seg_models, seg_images, tmp_path):
    """Each image brings its prompt; one outside its image fails that prompt, not the image."""
    from pxflow.flows.annotate import annotate

    config = _sam_yaml(tmp_path, _sam_config(seg_models, "_split"))
    manifest = tmp_path / "prompts.csv"
    manifest.write_text(
        "uri,prompt\n"
        f"{seg_images['a']},\"[[10,20,100,80]]\"\n"
        f"{seg_images['b']},\"[[5,5,40,40],[100,60,140,100]]\"\n"   # b is 60x90: the second box leaves it
        f"{seg_images['c']},\"[[1,2,3]]\"\n"                        # not a box: that input fails
    )
    options = AnnotateOptions(pipeline=config, predict_kwargs={"prompt_type": "box", "prompt": "per_input"})
    result = annotate(input=str(manifest), output=str(tmp_path / "out"), options=options)
    assert result["complete"] and result["rows_images"] == 3
    images = {Path(r["image_uri"]).stem: r for r in read_table(str(tmp_path / "out" / "images")).to_pylist()}
    assert (images["a"]["status"], images["a"]["num_objects"]) == ("ok", 1)
    assert (images["b"]["status"], images["b"]["num_objects"]) == ("ok", 1)
    assert (images["c"]["status"], images["c"]["error_type"]) == ("error", "invalid_prompt")
    objects = {Path(r["image_uri"]).stem: r for r in read_table(str(tmp_path / "out" / "objects")).to_pylist()}
    assert json.loads(objects["a"]["prompt"]) == [10, 20, 100, 80] and json.loads(objects["b"]["prompt"]) == [5, 5, 40, 40]


def test_an_out_of_bounds_prompt_fails_that_prompt_only(seg_models, seg_images):
    from pxflow.pipelines import create_pipeline

    pipe = create_pipeline(config=_sam_config(seg_models, "_split"))
    (res,) = pipe.predict(seg_images["b"], prompt=[[5, 5, 40, 40], [100, 60, 140, 100]])  # b is 60 wide, 90 high
    assert res.ok and len(res["masks"]) == 1 and res["prompts"] == {"box_prompt": [[5.0, 5.0, 40.0, 40.0]]}
    assert res["invalid_prompts"] == [{"prompt": [100.0, 60.0, 140.0, 100.0],
                                       "message": "box prompt [100.0, 60.0, 140.0, 100.0] lies outside the 60x90 image"}]
