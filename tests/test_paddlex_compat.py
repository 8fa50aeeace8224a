"""PaddleX compatibility, each case written with the call form PaddleX's own documents use.

- ``create_pipeline(pipeline_name=...)`` (2.x / 3.0-beta), ``config="x.yaml"``, ``index=`` (PP-ShiTuV2),
  ``use_hpip`` / ``enable_hpi`` / ``hpi_config`` / ``pp_option``; unknown keywords are a ``TypeError``;
- PaddleX 3.0-beta's ``Global:`` + ``Pipeline:`` YAML layout;
- index folders of other PaddleX versions (``index_info.yaml``, ``id_map.yaml`` without ``index_type``,
  the pickled ``id_map.pkl`` refused);
- ``res.print(format_json=..., indent=..., ensure_ascii=...)`` and ``res.img`` -> ``{"res": PIL.Image}``;
- the CLI's ``--get_pipeline_config NAME`` (``./NAME.yaml``) and its two flag spellings;
- device strings (``gpu:1,2``, ``npu:0`` ...); ``--help`` of the model build scripts.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import faiss
import numpy as np
import pytest
import yaml
from PIL import Image

from pxflow.flows.cli.pipeline_flags import given_options
from pxflow.flows.cli.predict import build_parser
from pxflow.flows.cli.predict import main as cli_main
from pxflow.pipelines import create_pipeline
from pxflow.pipelines.config import builtin_config_path, load_config
from pxflow.pipelines.models.backends import normalize_device, parse_device
from pxflow.pipelines.registry import spec_of
from pxflow.pipelines.results import BaseResult
from pxflow.pipelines.retrieval import IndexData, IndexFormatError
from tests.conftest import COCO_MINI, DRINK, PICODET_ONNX, PICODET_PADDLE, ROOT, require_shared
from tests.support.seg_models import seg_images, seg_models  # noqa: F401  (fixtures)
from tests.support.shitu_models import shitu_models  # noqa: F401  (fixture)

# COCO val2017 000000000139.jpg ... : the first image of the shared mini set, 640x426
FIRST_IMAGE = "000000000139.jpg"


def _od_config(model_dir: Path | str, **sub) -> dict:
    return {"SubModules": {"ObjectDetection": {"model_dir": str(model_dir), **sub}}}


def _image() -> str:
    require_shared()
    path = COCO_MINI / "images" / FIRST_IMAGE
    assert path.is_file(), path
    return str(path)


@pytest.fixture()
def both_formats(tmp_path) -> Path:
    """One model directory holding the Paddle and the ONNX form of PicoDet-XS."""
    require_shared()
    d = tmp_path / "PicoDet-XS_both"
    d.mkdir()
    for src in (*PICODET_PADDLE.iterdir(), PICODET_ONNX / "inference.onnx"):
        os.symlink(src, d / src.name)
    return d


# ---------------------------------------------------------------- 1. create_pipeline's arguments


def test_pipeline_name_is_an_alias_of_pipeline():
    require_shared()
    pipe = create_pipeline(pipeline_name="object_detection", config=_od_config(PICODET_ONNX))
    assert type(pipe).__name__ == "ObjectDetectionPipeline"
    assert pipe.config["SubModules"]["ObjectDetection"]["model_dir"] == str(PICODET_ONNX)
    with pytest.raises(TypeError, match="pipeline_name"):
        create_pipeline("object_detection", pipeline_name="instance_segmentation", config=_od_config(PICODET_ONNX))


def test_config_may_be_a_yaml_path(tmp_path):
    require_shared()
    cfg = yaml.safe_load(Path(builtin_config_path("object_detection")).read_text(encoding="utf-8"))
    cfg["SubModules"]["ObjectDetection"].update(model_dir=str(PICODET_ONNX), threshold=0.6)
    path = tmp_path / "my_detector.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    pipe = create_pipeline(config=str(path))
    assert pipe.config["SubModules"]["ObjectDetection"]["threshold"] == 0.6
    (res,) = list(pipe.predict(_image()))
    scores = [b["score"] for b in res["boxes"]]
    assert scores and min(scores) >= 0.6  # the YAML's threshold is the one applied


def test_unknown_keyword_arguments_are_a_type_error_naming_them():
    require_shared()
    with pytest.raises(TypeError) as err:
        create_pipeline("object_detection", config=_od_config(PICODET_ONNX), infer_worker=2, colour="red")
    assert "infer_worker" in str(err.value) and "colour" in str(err.value)


def test_pxflow_settings_as_keyword_overrides():
    require_shared()
    pipe = create_pipeline(
        "object_detection", config=_od_config(PICODET_PADDLE), backend="paddle", cpu_threads=1, load_workers=3, prefetch=5, infer_workers=1
    )
    px = pipe.config["Pxflow"]
    assert (px["backend"], px["cpu_threads"], px["load_workers"], px["prefetch"], px["infer_workers"]) == ("paddle", 1, 3, 5, 1)
    assert pipe.model.backend.name == "paddle"


@pytest.mark.parametrize("flag", ["use_hpip", "enable_hpi"])
def test_high_performance_flag_warns_and_picks_onnxruntime(both_formats, flag):
    # without the flag, backend auto on the CPU already prefers ONNX; with backend="paddle" it is Paddle
    assert create_pipeline("object_detection", config=_od_config(both_formats), backend="paddle").model.backend.name == "paddle"
    with pytest.warns(UserWarning, match="high-performance inference plugin"):
        pipe = create_pipeline("object_detection", config=_od_config(both_formats), **{flag: True})
    assert pipe.model.backend.name == "onnxruntime"


def test_hpi_config_backend_is_honoured_and_explicit_backend_wins(both_formats):
    with pytest.warns(UserWarning, match="hpi_config backend 'paddle'") as record:
        pipe = create_pipeline("object_detection", config=_od_config(both_formats), use_hpip=True, hpi_config={"backend": "paddle", "auto_config": False})
    assert pipe.model.backend.name == "paddle"
    assert any("auto_config" in str(w.message) for w in record)  # the options it cannot honour are named
    with pytest.warns(UserWarning, match="backend='onnxruntime' was given explicitly"):
        pipe = create_pipeline("object_detection", config=_od_config(both_formats), backend="onnxruntime", use_hpip=True, hpi_config={"backend": "paddle"})
    assert pipe.model.backend.name == "onnxruntime"


def test_no_warning_without_hpi():
    require_shared()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        create_pipeline("object_detection", config=_od_config(PICODET_ONNX), use_hpip=False)
    assert not [w for w in record if "high-performance" in str(w.message) or "hpi" in str(w.message)]


class FakePredictorOption:
    """What PaddleX's ``PaddlePredictorOption(run_mode=..., cpu_threads=...)`` holds: the set keys in ``_cfg``."""

    def __init__(self, **cfg):
        self._cfg = dict(cfg)

    def __getattr__(self, key):  # PaddlePredictorOption raises a bare Exception for unset keys
        raise Exception(f"The key ({key}) is not found in cfg")


def test_pp_option_is_mapped_where_pxflow_has_an_equivalent(both_formats):
    with pytest.warns(UserWarning, match="pp_option") as record:
        pipe = create_pipeline("object_detection", config=_od_config(both_formats), pp_option=FakePredictorOption(run_mode="mkldnn", cpu_threads=3, enable_cinn=True))
    assert pipe.model.backend.name == "paddle"
    assert pipe.config["Pxflow"]["cpu_threads"] == 3
    assert "enable_cinn" in str(record[0].message)
    # TensorRT has no pxflow equivalent: ignored (named in the warning), backend stays auto (ONNX here)
    with pytest.warns(UserWarning, match="trt_fp16|run_mode"):
        pipe = create_pipeline("object_detection", config=_od_config(both_formats), pp_option={"run_mode": "trt_fp16"})
    assert pipe.model.backend.name == "onnxruntime"


def test_index_argument_sets_the_shitu_index(shitu_models, tmp_path):
    from pxflow.pipelines.retrieval import build_index

    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 512)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    labels = ["cola", "cola", "tea", "tea", "water", "juice"]
    index_dir = str(tmp_path / "index")
    build_index(features, labels, index_type="Flat", metric_type="IP").save(index_dir)
    config = {"SubModules": {"Detection": {"model_dir": shitu_models["det"]}, "Recognition": {"model_dir": shitu_models["rec"]}}}
    pipe = create_pipeline("PP-ShiTuV2", config=config, index=index_dir)
    assert pipe.index is not None and len(pipe.index) == 6
    assert pipe.index.labels == ["cola", "juice", "tea", "water"]
    assert "index" not in pipe.config["Pxflow"]
    with pytest.raises(TypeError, match="PP-ShiTuV2"):
        create_pipeline("object_detection", config=_od_config(PICODET_ONNX), index=index_dir)


# ---------------------------------------------------------------- 2. PaddleX 3.0-beta's YAML layout


def _beta_yaml(tmp_path: Path, name: str, **pipeline) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"Global": {"pipeline_name": name, "input": "demo.png"}, "Pipeline": pipeline}), encoding="utf-8")
    return str(path)


def test_beta_layout_object_detection(tmp_path):
    require_shared()
    path = _beta_yaml(tmp_path, "object_detection", model=str(PICODET_ONNX), batch_size=3, device="cpu")
    pipe = create_pipeline(path)
    sub = pipe.config["SubModules"]["ObjectDetection"]
    assert (sub["model_dir"], sub["model_name"], sub["batch_size"]) == (str(PICODET_ONNX), None, 3)
    assert sub["module_name"] == "object_detection" and pipe.device == "cpu" and pipe.batch_size == 3
    assert "Global" not in pipe.config and "Pipeline" not in pipe.config
    ours = create_pipeline("object_detection", config=_od_config(PICODET_ONNX))
    (a,) = list(pipe.predict(_image()))
    (b,) = list(ours.predict(_image()))
    assert a["boxes"] and a.json == b.json


def test_beta_layout_small_object_detection(tmp_path):
    require_shared()
    pipe = create_pipeline(config=_beta_yaml(tmp_path, "small_object_detection", model=str(PICODET_ONNX), batch_size=2))
    sub = pipe.config["SubModules"]["SmallObjectDetection"]
    assert (sub["model_dir"], sub["batch_size"], sub["threshold"]) == (str(PICODET_ONNX), 2, 0.5)  # 0.5: the 3.x default
    assert type(pipe).__name__ == "SmallObjectDetectionPipeline"
    (res,) = list(pipe.predict(_image()))
    assert res["boxes"] and min(b["score"] for b in res["boxes"]) >= 0.5


def test_beta_layout_instance_segmentation(tmp_path, seg_models, seg_images):
    pipe = create_pipeline(_beta_yaml(tmp_path, "instance_segmentation", model=seg_models["maskbox"], batch_size=2, device="cpu"))
    sub = pipe.config["SubModules"]["InstanceSegmentation"]
    assert (sub["model_dir"], sub["batch_size"]) == (seg_models["maskbox"], 2)
    (res,) = list(pipe.predict(seg_images["a"]))
    # MaskBox's boxes scored 0.95 and 0.70 pass the default threshold 0.5; 0.40 and the padding row do not
    assert sorted(round(b["score"], 2) for b in res["boxes"]) == [0.70, 0.95]


def test_beta_layout_model_names_shitu_and_errors(tmp_path):
    cfg = load_config(_beta_yaml(tmp_path, "object_detection", model="PicoDet-S"))
    assert cfg["SubModules"]["ObjectDetection"]["model_name"] == "PicoDet-S"
    assert cfg["SubModules"]["ObjectDetection"]["model_dir"] is None
    # PaddleX 3.0.0b1's PP-ShiTuV2.yaml, key for key
    shitu = load_config(_beta_yaml(
        tmp_path, "PP-ShiTuV2", det_model="PP-ShiTuV2_det", rec_model="/models/rec", det_batch_size=1, rec_batch_size=4,
        index="None", score_thres=0.4, return_k=3,
    ))
    assert shitu["SubModules"]["Detection"]["model_name"] == "PP-ShiTuV2_det"
    assert shitu["SubModules"]["Recognition"]["model_dir"] == "/models/rec"
    assert shitu["SubModules"]["Recognition"]["batch_size"] == 4
    assert (shitu["rec_threshold"], shitu["rec_topk"], shitu["index"]) == (0.4, 3, "None")
    with pytest.raises(ValueError, match="text_det_model"):
        load_config(_beta_yaml(tmp_path, "object_detection", model="PicoDet-S", text_det_model="x"))
    with pytest.raises(ValueError, match="SubModules"):
        load_config(_beta_yaml(tmp_path, "open_vocabulary_segmentation", model="SAM-H_box"))


def _handed_out_yaml(tmp_path: Path, name: str, pipeline_section: str) -> str:
    """The YAML ``--get_pipeline_config NAME`` writes, with the documents' §4.2 edit appended to it."""
    assert cli_main(["--get_pipeline_config", name, "--save_path", str(tmp_path)]) == 0
    path = tmp_path / f"{name}.yaml"
    assert "pipeline_name:" in path.read_text(encoding="utf-8") and "SubModules:" in path.read_text(encoding="utf-8")
    with path.open("a", encoding="utf-8") as f:
        f.write("\n" + pipeline_section)
    return str(path)


def test_pipeline_section_added_to_the_handed_out_yaml_is_merged(tmp_path):
    """§4.2 of the documents: ``Pipeline: {model: DIR, device: cpu, batch_size: 1}`` in the SubModules layout.

    Ignored before, the run then tried to download PicoDet-S (the YAML's model_name)."""
    require_shared()
    path = _handed_out_yaml(tmp_path, "object_detection", f"Pipeline:\n  model: {PICODET_ONNX}\n  device: cpu\n  batch_size: 2\n")
    pipe = create_pipeline(path)
    sub = pipe.config["SubModules"]["ObjectDetection"]
    assert (sub["model_dir"], sub["model_name"], sub["batch_size"]) == (str(PICODET_ONNX), None, 2)
    assert sub["module_name"] == "object_detection" and sub["threshold"] is None  # the file's other keys stay
    assert pipe.device == "cpu" and "Pipeline" not in pipe.config
    (res,) = list(pipe.predict(_image()))
    assert res["boxes"] and pipe.model.model_name == "PicoDet-XS"  # the directory's own model ran, nothing was downloaded

    named = load_config(_handed_out_yaml(tmp_path / "n", "object_detection", "Pipeline:\n  model: PicoDet-L\n"))
    assert (named["SubModules"]["ObjectDetection"]["model_name"], named["SubModules"]["ObjectDetection"]["model_dir"]) == ("PicoDet-L", None)
    shitu = load_config(_handed_out_yaml(tmp_path / "s", "PP-ShiTuV2", "Pipeline:\n  rec_model: /models/rec\n  rec_batch_size: 4\n"))
    assert (shitu["SubModules"]["Recognition"]["model_dir"], shitu["SubModules"]["Recognition"]["batch_size"]) == ("/models/rec", 4)
    assert shitu["SubModules"]["Detection"]["model_name"] == "PP-ShiTuV2_det"  # untouched


def test_pipeline_section_that_cannot_apply_fails_naming_it(tmp_path):
    sam = _handed_out_yaml(tmp_path, "open_vocabulary_segmentation", "Pipeline:\n  model: /models/sam\n  device: cpu\n")
    with pytest.raises(ValueError, match=r"open_vocabulary_segmentation.yaml: a `Pipeline:` section \(device, model\) cannot be applied"):
        create_pipeline(sam)
    typo = _handed_out_yaml(tmp_path / "t", "object_detection", "Pipeline:\n  modle: /models/x\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['modle'\] in the PaddleX Pipeline section"):
        create_pipeline(typo)


# ---------------------------------------------------------------- 3. index folders of other PaddleX versions


def _write_index(tmp_path: Path, structure: str, info_name: str, info: dict) -> tuple[Path, np.ndarray]:
    vectors = np.eye(4, 8, dtype=np.float32) + 0.01  # four distinct, hand-checkable vectors
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexIDMap2(faiss.index_factory(8, structure, faiss.METRIC_INNER_PRODUCT))
    index.add_with_ids(vectors, np.array([10, 11, 12, 13], dtype=np.int64))
    d = tmp_path / f"{structure}-{info_name}"
    d.mkdir()
    faiss.write_index(index, str(d / "vector.index"))
    (d / info_name).write_text(yaml.safe_dump(info, allow_unicode=True), encoding="utf-8")
    return d, vectors


def test_index_info_yaml_folder_loads(tmp_path):
    id_map = {10: "可乐", 11: "tea", 12: "water", 13: "juice"}
    d, vectors = _write_index(tmp_path, "Flat", "index_info.yaml", {"id_map": id_map, "metric_type": "IP", "index_type": "Flat"})
    index = IndexData.load(str(d))
    assert index.id_map == id_map and index.index_type == "Flat" and index.metric_type == "IP"
    (hit,) = index.query(vectors[2:3], topk=1, threshold=0.5)
    assert hit[0] == ["water"]


def test_paddlex_folder_with_a_pickle_and_index_info_yaml_loads_without_the_pickle(tmp_path):
    """vector.index + id_map.pkl + index_info.yaml, no side file of ours: the YAML labels it, the pickle is never read."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [f"drink_{i % 5}" for i in range(40)]
    # as PaddleX's builder makes it: index_factory(dim, "HNSW32", IP) inside an IndexIDMap2, ids 0..N-1
    index = faiss.IndexIDMap2(faiss.index_factory(16, "HNSW32", faiss.METRIC_INNER_PRODUCT))
    index.add_with_ids(vectors, np.arange(40, dtype=np.int64))
    d = tmp_path / "paddlex_index"
    d.mkdir()
    faiss.write_index(index, str(d / "vector.index"))
    # PaddleX's YAMLWriter: yaml.dump(index_info, default_flow_style=False, allow_unicode=True)
    info = {"index_type": "HNSW32", "metric_type": "IP", "id_map": dict(enumerate(labels))}
    (d / "index_info.yaml").write_text(yaml.dump(info, default_flow_style=False, allow_unicode=True), encoding="utf-8")
    (d / "id_map.pkl").write_bytes(b"\x80\x04 not a pickle: loading it would fail")
    loaded = IndexData.load(str(d))
    assert loaded.id_map == dict(enumerate(labels)) and (loaded.index_type, loaded.metric_type) == ("HNSW32", "IP")
    assert loaded.meta.ef_search  # no side file: search parameters derived from the index itself
    hits = loaded.query(vectors[[3, 17, 39]], topk=1, threshold=0.9)
    assert [h[0] for h in hits] == [["drink_3"], ["drink_2"], ["drink_4"]]


def test_beta2_id_map_without_index_type_loads(tmp_path):
    # PaddleX 3.0-beta2 wrote {metric_type, id_map} only; the index type comes from the faiss structure
    d, vectors = _write_index(tmp_path, "HNSW32", "id_map.yaml", {"metric_type": "IP", "id_map": {10: "a", 11: "b", 12: "c", 13: "d"}})
    index = IndexData.load(str(d))
    assert index.index_type == "HNSW32"
    (hit,) = index.query(vectors[0:1], topk=1, threshold=None)
    assert hit[0] == ["a"]


def test_pickled_id_map_is_refused_with_the_reason():
    require_shared()
    assert (DRINK / "index" / "id_map.pkl").is_file()
    with pytest.raises(IndexFormatError, match="pickle"):
        IndexData.load(str(DRINK / "index"))


def test_binary_index_is_refused(tmp_path):
    d, _ = _write_index(tmp_path, "Flat", "id_map.yaml", {"metric_type": "hamming", "index_type": "Flat", "id_map": {10: "a", 11: "b", 12: "c", 13: "d"}})
    with pytest.raises(IndexFormatError, match="binary"):
        IndexData.load(str(d))


# ---------------------------------------------------------------- 4. res.print and res.img


def _result() -> BaseResult:
    image = np.zeros((20, 30, 3), np.uint8)
    image[0, 0] = (255, 0, 0)  # BGR blue
    image[0, 1] = (0, 0, 255)  # BGR red
    return BaseResult({"input_path": "dir/可乐.png", "boxes": [{"label": "可乐", "score": 0.5}]}, image)


EXPECTED = {"res": {"input_path": "dir/可乐.png", "boxes": [{"label": "可乐", "score": 0.5}]}}


def test_print_format_json_indent_ensure_ascii(capsys):
    res = _result()
    res.print(format_json=True, indent=4, ensure_ascii=False)
    out = capsys.readouterr().out
    assert json.loads(out) == EXPECTED and "可乐" in out and '{\n    "res": {\n        "input_path"' in out
    res.print(format_json=True, indent=2, ensure_ascii=True)
    out = capsys.readouterr().out
    assert json.loads(out) == EXPECTED and "可乐" not in out and "\\u53ef\\u4e50" in out and '{\n  "res": {\n    "input_path"' in out
    res.print(format_json=False)
    out = capsys.readouterr().out
    assert ast.literal_eval(out.strip()) == EXPECTED and out.startswith("{'res': ")  # the plain dict repr
    res.print(json_format=False)  # the spelling PaddleX's code uses
    assert ast.literal_eval(capsys.readouterr().out.strip()) == EXPECTED
    res.print()
    assert json.loads(capsys.readouterr().out) == EXPECTED  # format_json defaults to True


def test_img_is_an_rgb_pil_image_and_save_to_img_is_unchanged(tmp_path):
    res = _result()
    img = res.img["res"]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (30, 20)
    assert img.getpixel((0, 0)) == (0, 0, 255) and img.getpixel((1, 0)) == (255, 0, 0)
    saved = res.save_to_img(str(tmp_path))
    assert Path(saved).name == "可乐_res.png"
    assert np.array_equal(cv2.imdecode(np.fromfile(saved, np.uint8), cv2.IMREAD_COLOR), res.render())


def test_real_detection_result_img():
    require_shared()
    (res,) = list(create_pipeline("object_detection", config=_od_config(PICODET_ONNX)).predict(_image()))
    img = res.img["res"]
    source = cv2.imread(_image())
    assert isinstance(img, Image.Image) and img.size == (source.shape[1], source.shape[0])
    assert np.array_equal(np.asarray(img)[..., ::-1], res.render())


def test_results_are_dicts_as_paddlex_documents_them():
    require_shared()
    (res,) = list(create_pipeline("object_detection", config=_od_config(PICODET_ONNX)).predict(_image(), threshold=0.5))
    assert isinstance(res, dict) and "boxes" in res and "input_path" in res
    assert len(res) == len(dict(res)) and set(dict(res)) >= {"input_path", "page_index", "boxes"}
    # COCO 000000000139.jpg holds people and a TV among others: some box above 0.5
    assert res["boxes"] and all(set(b) >= {"cls_id", "label", "score", "coordinate"} for b in res["boxes"])
    assert json.loads(json.dumps(res))["input_path"] == _image()
    assert json.loads(res.str["res"]) == json.loads(json.dumps(res.json["res"]))


def test_predict_refuses_unknown_keywords_and_other_devices():
    require_shared()
    pipe = create_pipeline("object_detection", config=_od_config(PICODET_ONNX), device="cpu")
    with pytest.raises(TypeError, match="thresold"):
        next(pipe.predict(_image(), thresold=0.99))
    with pytest.raises(TypeError, match="no_such_option"):
        next(pipe.predict(_image(), no_such_option=1))
    with pytest.raises(ValueError, match="create_pipeline"):
        next(pipe.predict(_image(), device="gpu:0"))
    (res,) = list(pipe.predict(_image(), device="cpu", threshold=0.99))  # the pipeline's own device is fine
    assert res.ok and all(b["score"] >= 0.99 for b in res["boxes"])


def test_pdf_pages_are_saved_one_file_each_as_paddlex_names_them(tmp_path):
    from tests.test_inputs import two_page_pdf

    require_shared()
    pdf = tmp_path / "two.pdf"
    two_page_pdf(pdf)
    out = tmp_path / "out"
    results = list(create_pipeline("object_detection", config=_od_config(PICODET_ONNX)).predict(str(pdf)))
    assert [r["page_index"] for r in results] == [0, 1]
    for res in results:
        res.save_to_json(str(out))
        res.save_to_img(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["two_0_res.jpg", "two_0_res.json", "two_1_res.jpg", "two_1_res.json"]
    assert json.loads((out / "two_1_res.json").read_text())["res"]["page_index"] == 1


# ---------------------------------------------------------------- 5. the CLI


def test_get_pipeline_config_without_save_path_writes_to_the_current_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["--get_pipeline_config", "object_detection"]) == 0
    written = tmp_path / "object_detection.yaml"
    assert written.read_text(encoding="utf-8") == Path(builtin_config_path("object_detection")).read_text(encoding="utf-8")
    err = capsys.readouterr().err
    assert "object_detection.yaml" in err
    assert cli_main(["--get-pipeline-config", "small_object_detection"]) == 0
    assert (tmp_path / "small_object_detection.yaml").is_file()
    assert cli_main(["--get-pipeline-config", "instance_segmentation", "--save-path", str(tmp_path / "sub")]) == 0
    assert (tmp_path / "sub" / "instance_segmentation.yaml").is_file()


def test_flags_have_one_kebab_style_with_paddlex_aliases():
    parser = build_parser(spec_of("open_vocabulary_segmentation"))  # --prompt-type is that pipeline's flag
    kebab = parser.parse_args(["--save-path", "o", "--model-dir", "m", "--batch-size", "2", "--prompt-type", "box",
                               "--get-pipeline-config", "x", "--no-progress"])
    snake = parser.parse_args(["--save_path", "o", "--model_dir", "m", "--batch_size", "2", "--prompt_type", "box",
                               "--get_pipeline_config", "x", "--no_progress"])
    assert vars(kebab) == vars(snake)
    assert (kebab.save_path, kebab.model_dir, kebab.batch_size, given_options(kebab), kebab.get_pipeline_config,
            kebab.no_progress) == ("o", "m", 2, {"prompt_type": "box"}, "x", True)
    help_text = parser.format_help()
    for flag in ("--save-path", "--model-dir", "--batch-size", "--prompt-type", "--get-pipeline-config", "--no-progress",
                 "--pipeline", "--input", "--device", "--backend", "--prompt"):
        assert flag in help_text
    assert "--threshold" in build_parser(spec_of("object_detection")).format_help()
    assert "--index" in build_parser(spec_of("PP-ShiTuV2")).format_help()


@pytest.mark.parametrize("style", ["kebab", "snake"])
def test_cli_predicts_with_either_spelling(tmp_path, style):
    require_shared()
    out = tmp_path / "out"
    flags = {"kebab": ("--model-dir", "--save-path", "--batch-size", "--no-progress"),
             "snake": ("--model_dir", "--save_path", "--batch_size", "--no_progress")}[style]
    code = cli_main(["--pipeline", "object_detection", flags[0], str(PICODET_ONNX), "--input", _image(), flags[1], str(out),
                     flags[2], "1", flags[3], "--quiet", "--threshold", "0.5", "--device", "cpu"])
    assert code == 0
    saved = json.loads((out / "000000000139_res.json").read_text(encoding="utf-8"))["res"]
    assert saved["boxes"] and min(b["score"] for b in saved["boxes"]) >= 0.5
    assert (out / "000000000139_res.jpg").is_file()


# ---------------------------------------------------------------- 6. devices


@pytest.mark.parametrize("text, expected", [
    (None, ("cpu", 0)), ("cpu", ("cpu", 0)), ("gpu", ("gpu", 0)), ("gpu:3", ("gpu", 3)), ("GPU:2", ("gpu", 2)),
])
def test_parse_device(text, expected):
    assert parse_device(text) == expected


def test_multi_gpu_uses_the_first_and_warns():
    with pytest.warns(UserWarning, match="gpu:1 is used"):
        assert parse_device("gpu:1,2") == ("gpu", 1)
    with pytest.warns(UserWarning):
        assert normalize_device("gpu:0,3") == "gpu:0"


@pytest.mark.parametrize("text", ["npu", "npu:0", "xpu", "xpu:1", "mlu:0", "dcu", "dcu:2"])
def test_other_accelerators_are_rejected(text):
    with pytest.raises(ValueError, match="cpu and NVIDIA GPUs only"):
        parse_device(text)


@pytest.mark.parametrize("text", ["tpu", "gpu:x", "gpu:", "cuda:0", "cpu:1", "gpu:-1"])
def test_malformed_devices_are_a_clear_value_error(text):
    with pytest.raises(ValueError, match="device"):
        parse_device(text)


def test_bad_device_fails_at_creation():
    require_shared()
    with pytest.raises(ValueError, match="cpu and NVIDIA GPUs only"):
        create_pipeline("object_detection", config=_od_config(PICODET_ONNX), device="npu:0")


# ---------------------------------------------------------------- 7. build scripts' --help


@pytest.mark.parametrize("script", ["build_test_models_seg.py", "build_test_models_shitu.py"])
def test_build_scripts_print_help(script, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:") and " out" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # nothing built (it used to build into a folder named --help)
