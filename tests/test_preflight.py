"""``preflight``: the batch flows' one check before fanning out; bad models and options fail here, clearly."""

from __future__ import annotations

import os
import shutil

import pytest

from pxflow.pipelines.models.model_dir import ModelDirError
from pxflow.pipelines.object_detection.pipeline import ObjectDetectionPipeline
from pxflow.pipelines.preflight import preflight
from tests.conftest import PICODET_ONNX, require_shared
from tests.support.seg_models import seg_models  # noqa: F401  (fixture)


def det_config(model_dir) -> dict:
    return {
        "pipeline_name": "object_detection",
        "SubModules": {"ObjectDetection": {"model_name": "PicoDet-XS", "model_dir": str(model_dir)}},
    }


def copy_model(tmp_path, name="model"):
    require_shared()
    target = tmp_path / name
    shutil.copytree(PICODET_ONNX, target)
    return target


def test_a_good_config_gives_the_pipeline_back():
    require_shared()
    pipe = preflight(det_config(PICODET_ONNX), {"threshold": 0.4})
    assert isinstance(pipe, ObjectDetectionPipeline)
    result = next(pipe.predict(str(PICODET_ONNX / "inference.yml")))  # reusable: a YAML is not an image
    assert result.data["error"]["type"] in ("unsupported_format", "decode_failed")


def test_a_garbage_onnx_file_is_named(tmp_path):
    model = copy_model(tmp_path)
    (model / "inference.onnx").write_bytes(os.urandom(4096))
    with pytest.raises(ModelDirError, match=r"inference\.onnx: ONNX Runtime could not load the model") as err:
        preflight(det_config(model), {})
    assert str(model / "inference.onnx") in str(err.value)
    assert isinstance(err.value, ValueError)


def test_a_broken_inference_yml_is_named(tmp_path):
    model = copy_model(tmp_path)
    (model / "inference.yml").write_text("Global:\n  model_name: [unclosed\n  x: : :\n")
    with pytest.raises(ModelDirError, match=r"inference\.yml: invalid YAML") as err:
        preflight(det_config(model), {})
    assert str(model / "inference.yml") in str(err.value)


def test_an_inference_yml_that_is_not_a_mapping(tmp_path):
    model = copy_model(tmp_path)
    (model / "inference.yml").write_text("- just\n- a list\n")
    with pytest.raises(ModelDirError, match=r"inference\.yml: expected a YAML mapping"):
        preflight(det_config(model), {})


def test_a_model_dir_without_a_graph(tmp_path):
    model = copy_model(tmp_path)
    (model / "inference.onnx").unlink()
    with pytest.raises(ModelDirError, match=r"no model graph") as err:
        preflight(det_config(model), {})
    assert str(model) in str(err.value)


def test_an_empty_graph_file(tmp_path):
    model = copy_model(tmp_path)
    (model / "inference.onnx").write_bytes(b"")
    with pytest.raises(ModelDirError, match=r"inference\.onnx: empty file"):
        preflight(det_config(model), {})


def test_a_threshold_out_of_range():
    require_shared()
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 5"):
        preflight(det_config(PICODET_ONNX), {"threshold": 5})


def test_predict_arguments_are_not_options():
    require_shared()
    with pytest.raises(TypeError, match="on_error"):
        preflight(det_config(PICODET_ONNX), {"on_error": "raise"})


def test_a_config_without_pipeline_name():
    with pytest.raises(ValueError, match="pipeline_name"):
        preflight({"SubModules": {}}, {})


def sam_config(models) -> dict:
    return {
        "pipeline_name": "open_vocabulary_segmentation",
        "SubModules": {"BoxPromptSegmentation": {"model_dir": models["sam_box"]}},
    }


def test_sam_good_and_bad_prompts(seg_models):
    pipe = preflight(sam_config(seg_models), {"prompt_type": "box", "prompt": [[1, 2, 30, 40]]})
    assert pipe.pipeline_name == "open_vocabulary_segmentation"
    with pytest.raises(ValueError, match="prompt"):
        preflight(sam_config(seg_models), {"prompt_type": "box", "prompt": [[1, 2, 3]]})
    with pytest.raises(ValueError, match="needs prompt="):
        preflight(sam_config(seg_models), {"prompt_type": "box"})
    with pytest.raises(ValueError, match="no PointPromptSegmentation model"):
        preflight(sam_config(seg_models), {"prompt_type": "point", "prompt": [[1, 2]]})


def test_a_garbage_sam_model_fails_in_preflight(seg_models, tmp_path):
    model = tmp_path / "sam"
    shutil.copytree(seg_models["sam_box"], model)
    graphs = [n for n in os.listdir(model) if n.endswith((".onnx", ".json", ".pdiparams"))]
    for name in graphs:
        (model / name).write_bytes(os.urandom(2048))
    with pytest.raises(ModelDirError, match=str(model)):
        preflight({**sam_config(seg_models), "SubModules": {"BoxPromptSegmentation": {"model_dir": str(model)}}},
                  {"prompt_type": "box", "prompt": [[1, 2, 30, 40]]})
