"""The standard SAM ONNX interface (segment-anything / MobileSAM / samexporter) end to end, and model-level failures.

The models come from ``scripts/build_test_models_sam.py``: exactly the standard names and shapes, with a
decoder whose mask is the prompted box, or a disc of radius ``POINT_RADIUS`` (1024 frame) around the point,
at ``orig_im_size``. A decoder pxflow cannot drive must fail when the model loads, naming the directory;
a model that loads but fails on every image must fail the annotate run instead of writing error rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from pxflow.flows.cli import main as cli_main
from pxflow.pipelines.models.model_dir import ModelDirError
from pxflow.pipelines.ops.masks import box_mask, decode_rle
from pxflow.pipelines.preflight import preflight
from pxflow.pipelines.registry import create_pipeline
from pxflow.tasks.rows import systematic_failure
from tests.support.annotate_helpers import read_table
from tests.support.seg_models import build_script, seg_images, seg_models, standard_sam  # noqa: F401  (fixtures)
from tests.support.masks import iou

B = build_script("build_test_models_sam")
SAM_MEAN, SAM_STD = np.array(B.PROCESSOR["mean"]), np.array(B.PROCESSOR["std"])


def sam_config(model_dir: str, **px) -> dict:
    return {
        "pipeline_name": "open_vocabulary_segmentation",
        "SubModules": {"BoxPromptSegmentation": {"model_dir": model_dir}, "PointPromptSegmentation": {"model_dir": model_dir}},
        "Pxflow": px,
    }



def disc(h: int, w: int, x: float, y: float) -> np.ndarray:
    """The test decoder's disc in original pixels: radius POINT_RADIUS in the 1024 frame."""
    yy, xx = np.mgrid[:h, :w] + 0.5
    radius = B.POINT_RADIUS * max(h, w) / B.SIZE
    return (xx - x) ** 2 + (yy - y) ** 2 <= radius**2


class Spy:
    """Records what a real backend's ``run`` is fed and returns (the model still runs)."""

    def __init__(self, backend) -> None:
        self.feeds, self.outputs, self._run = [], [], backend.run
        backend.run = self

    def __call__(self, inputs):
        self.feeds.append({k: np.array(v) for k, v in inputs.items()})
        out = self._run(inputs)
        self.outputs.append(out)
        return out


# -- predict ------------------------------------------------------------------------------------
def test_box_and_point_prompts_on_the_standard_interface(standard_sam, seg_images):
    pipe = create_pipeline("open_vocabulary_segmentation", config=sam_config(standard_sam["standard"]))
    sam = pipe.models["box"].get()
    encoder, decoder = Spy(sam.encoder), Spy(sam.decoder)
    boxes = [[10, 20, 100, 80], [120.5, 5.25, 199, 119]]
    r = next(pipe.predict(seg_images["a"], prompt_type="box", prompt=boxes))  # 200 wide, 120 high
    assert r.ok and r["masks"].shape == (2, 120, 200)
    for mask, box in zip(r["masks"], boxes):
        assert iou(mask, box_mask(box, 120, 200)) > 0.97
    assert len(encoder.feeds) == 1 and len(decoder.feeds) == 2  # one embedding for every prompt of the image
    feed = decoder.feeds[0]
    # segment-anything's ResizeLongestSide.apply_coords: x by new_w / w, y by new_h / h, new = int(old * 1024 / long + 0.5)
    sx, sy = 1024 / 200, int(120 * 1024 / 200 + 0.5) / 120
    assert np.allclose(feed["point_coords"], [[[10 * sx, 20 * sy], [100 * sx, 80 * sy]]], atol=0.01)
    assert feed["point_labels"].tolist() == [[2, 3]]  # box corners
    assert feed["orig_im_size"].tolist() == [120, 200] and feed["has_mask_input"].tolist() == [0]
    assert feed["mask_input"].shape == (1, 1, 256, 256) and not feed["mask_input"].any()
    assert feed["image_embeddings"].shape == (1, 256, 64, 64)

    points = [[20, 10], [50, 70.5]]  # b: 60 wide, 90 high (the long side is the height)
    pipe_p = create_pipeline("open_vocabulary_segmentation", config=sam_config(standard_sam["standard"]))
    decoder = Spy(pipe_p.models["point"].get().decoder)
    r = next(pipe_p.predict(seg_images["b"], prompt_type="point", prompt=points))
    assert r.ok and r["masks"].shape == (2, 90, 60)
    for mask, (x, y) in zip(r["masks"], points):
        assert mask[int(y), int(x)] and iou(mask, disc(90, 60, x, y)) > 0.95
    assert decoder.feeds[1]["point_labels"].tolist() == [[1, -1]]  # the point, then segment-anything's padding point
    sx = int(60 * 1024 / 90 + 0.5) / 60
    assert np.allclose(decoder.feeds[1]["point_coords"], [[[50 * sx, 70.5 * 1024 / 90], [0, 0]]], atol=0.01)
    assert r["mask_infos"] == [{"label": "point_prompt", "prompt": [float(v) for v in p]} for p in points]


def test_encoder_gets_the_image_preprocessed_as_the_config_says(standard_sam, seg_images, tmp_path):
    """A uniform image: its normalised colour in every block the resized image covers, 0 in the padding."""
    import cv2

    image = tmp_path / "flat.png"
    bgr = (30, 60, 90)
    cv2.imwrite(str(image), np.full((100, 200, 3), bgr, np.uint8))  # resized to 1024 x 512: block rows 32+ are padding
    rgb = np.array(bgr[::-1], float)

    def embedding(model_dir: str) -> np.ndarray:
        pipe = create_pipeline("open_vocabulary_segmentation", config=sam_config(model_dir))
        spy = Spy(pipe.models["box"].get().encoder)
        assert next(pipe.predict(str(image), prompt=[[1, 1, 50, 50]])).ok
        return spy.outputs[0][0][0]

    emb = embedding(standard_sam["standard"])  # no inference.yml beside encoder/: the encoder's Processor
    assert np.allclose(emb[:3, :32, :], ((rgb - SAM_MEAN) / SAM_STD)[:, None, None], atol=1e-3)
    assert not emb[:3, 32:, :].any() and not emb[3:].any()

    custom = tmp_path / "custom"
    custom.mkdir()
    for part in ("encoder", "decoder"):
        os.symlink(os.path.join(standard_sam["standard"], part), custom / part)
    (custom / "inference.yml").write_text(yaml.safe_dump({"Processor": {"size": 1024, "mean": [0, 0, 0], "std": [1, 1, 1]}}))
    emb = embedding(str(custom))  # the directory's own inference.yml wins
    assert np.allclose(emb[:3, :32, :], rgb[:, None, None], atol=1e-3)


# -- graphs pxflow cannot drive -----------------------------------------------------------------
def test_a_decoder_with_unexpected_inputs_fails_when_the_pipeline_is_created(standard_sam, monkeypatch):
    bad = standard_sam["unexpected"]
    loaded = []
    from pxflow.pipelines.models import backends

    real_create = backends.create_backend
    monkeypatch.setattr("pxflow.pipelines.predictors.sam.create_backend", lambda *a, **k: loaded.append(a) or real_create(*a, **k))
    with pytest.raises(ModelDirError) as err:
        create_pipeline("open_vocabulary_segmentation", config=sam_config(bad))
    assert loaded == []  # read from the graph files: no session was created, no weights loaded
    message = str(err.value)
    assert message.startswith(os.path.join(bad, "decoder") + ": cannot drive this SAM decoder")
    assert "['image_embeddings', 'point_coords', 'point_labels']" in message
    assert "mask_input, has_mask_input, orig_im_size" in message and "'prompt'" in message
    with pytest.raises(ModelDirError, match="cannot drive this SAM decoder"):
        preflight(sam_config(bad), {"prompt_type": "box", "prompt": [[1, 1, 20, 20]]})
    # a standard decoder given as a single-graph (PaddleX) directory: named, with what that layout needs
    whole = os.path.join(standard_sam["standard"], "decoder")
    with pytest.raises(ModelDirError, match=r"cannot drive this SAM graph: its inputs are .*PaddleX's SAM-H layout") as err:
        create_pipeline("open_vocabulary_segmentation", config=sam_config(whole))
    assert str(err.value).startswith(whole)
    # only the configured prompt types are checked: a bad point model fails a box-and-point config too
    mixed = sam_config(standard_sam["standard"])
    mixed["SubModules"]["PointPromptSegmentation"]["model_dir"] = bad
    with pytest.raises(ModelDirError, match="cannot drive this SAM decoder"):
        create_pipeline("open_vocabulary_segmentation", config=mixed)
    del mixed["SubModules"]["PointPromptSegmentation"]
    assert create_pipeline("open_vocabulary_segmentation", config=mixed) and loaded == []  # good graphs: still lazy


def test_graph_io_reads_the_names_a_loaded_session_reports(standard_sam):
    from pxflow.pipelines.models import create_backend, load_model_spec
    from pxflow.pipelines.models.graph_io import graph_io
    from tests.conftest import PICODET_PADDLE, require_shared

    dirs = [os.path.join(standard_sam[kind], part) for kind in ("standard", "unexpected") for part in ("encoder", "decoder")]
    require_shared()
    for directory, backend in [*((d, "onnxruntime") for d in dirs), (str(PICODET_PADDLE), "paddle")]:
        spec = load_model_spec(directory)
        io, session = graph_io(spec, backend), create_backend(spec, backend)
        assert (io.input_names, io.output_names) == (session.input_names, session.output_names), directory
    assert graph_io(load_model_spec(dirs[1])).input_names == list(B.STANDARD_DECODER_INPUTS)


def test_a_model_dir_names_itself_not_the_yaml_default(standard_sam, tmp_path):
    """The built-in YAML says SAM-H_box; the directory that runs is the name results and run keys record."""
    from pxflow.pipelines.open_vocabulary_segmentation.pipeline import OpenVocabularySegmentationPipeline
    from pxflow.pipelines.config import load_config

    named = tmp_path / "MobileSAM-export"
    named.mkdir()
    for part in ("encoder", "decoder"):
        os.symlink(os.path.join(standard_sam["standard"], part), named / part)
    (named / "inference.yml").write_text(yaml.safe_dump({"Global": {"model_name": "MobileSAM"}, "Processor": B.PROCESSOR}))
    for directory, expected in ((standard_sam["standard"], "standard"), (str(named), "MobileSAM")):
        config = load_config("open_vocabulary_segmentation", {"SubModules": {"BoxPromptSegmentation": {"model_dir": directory}}})
        assert config["SubModules"]["BoxPromptSegmentation"]["model_name"] == "SAM-H_box"  # the YAML's default stays
        pipe = create_pipeline("open_vocabulary_segmentation", config=config)
        assert pipe.models["box"].get().model_name == expected
        assert OpenVocabularySegmentationPipeline.identity(config).model_name == expected


def test_systematic_failure_is_only_the_same_model_error_on_every_input():
    def row(status="error", error_type="inference_failed", message="ValueError: boom"):
        return {"status": status, "error_type": error_type, "error_message": message}

    assert systematic_failure([row(), row(), row()]) == "ValueError: boom"
    assert systematic_failure([row()]) is None  # one input: that input's problem
    assert systematic_failure([row(), row(message="ValueError: other")]) is None
    assert systematic_failure([row(), row("ok", None, None)]) is None
    assert systematic_failure([row(error_type="decode_failed"), row(error_type="decode_failed")]) is None  # bad images


# -- annotate -------------------------------------------------------------------------------------
def _inputs(tmp_path: Path, seg_images, names=("a", "b", "c")) -> str:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in names:
        os.symlink(seg_images[name], inputs / f"{name}.jpg")
    return str(inputs)


def test_annotate_with_detector_prompts_on_the_standard_interface(prefect_server, standard_sam, seg_models, seg_images, tmp_path):
    from pxflow.flows.annotate import annotate
    from pxflow.flows.options import AnnotateOptions

    detector = {"pipeline": "object_detection", "config": {"SubModules": {"ObjectDetection": {"model_dir": seg_models["maskbox"]}}}}
    config = tmp_path / "sam.yaml"
    config.write_text(yaml.safe_dump(sam_config(standard_sam["standard"], prompts_from=detector)))
    result = annotate(input=_inputs(tmp_path, seg_images, ("a", "c")), output=str(tmp_path / "out"),
                      options=AnnotateOptions(pipeline=str(config)))
    assert result["complete"] and result["rows_images"] == 2 and result["images_error"] == 0
    images = {Path(r["image_uri"]).stem: r for r in read_table(str(tmp_path / "out" / "images")).to_pylist()}
    objects = read_table(str(tmp_path / "out" / "objects")).to_pylist()
    assert sorted((Path(r["image_uri"]).stem, r["label"]) for r in objects) == [
        ("a", "car"), ("a", "person"), ("c", "car"), ("c", "person")]  # the generated detector's boxes above 0.5
    for r in objects:
        h, w = images[Path(r["image_uri"]).stem]["height"], images[Path(r["image_uri"]).stem]["width"]
        assert (r["mask_height"], r["mask_width"]) == (h, w)
        mask = decode_rle({"size": [h, w], "counts": r["mask_counts"]})
        assert iou(mask, box_mask(json.loads(r["prompt"]), h, w)) > 0.95


def test_annotate_fails_when_the_model_fails_on_every_image(prefect_server, standard_sam, seg_images, tmp_path, capsys):
    config = tmp_path / "sam.yaml"
    config.write_text(yaml.safe_dump(sam_config(standard_sam["failing"])))
    out = tmp_path / "out"
    argv = ["annotate", "--input", _inputs(tmp_path, seg_images), "--output", str(out), "--pipeline", str(config),
            "--prompt-type", "box", "--prompt", "[[1, 1, 20, 20]]", "--limit", "3", "--shard-size", "3", "--no-progress"]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert "IncompleteRunError" in err and "failed on all 3 inputs with the same error" in err
    assert "Reshape" in err  # the model's own error, once, not three error rows
    images = out / "images"
    assert not images.exists() or read_table(str(images)).num_rows == 0

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(sam_config(standard_sam["unexpected"])))
    with pytest.raises(SystemExit) as exit_:  # a usage error: exit 2 before any flow starts
        cli_main(argv[:6] + [str(bad)] + argv[7:])
    assert exit_.value.code == 2 and "cannot drive this SAM decoder" in capsys.readouterr().err


# -- serve --------------------------------------------------------------------------------------
def test_serve_segments_with_the_standard_interface(tmp_path, standard_sam, seg_images):
    from tests.test_serve import Server, b64, ok_result

    model = standard_sam["standard"]
    srv = Server(["--pipeline", "open_vocabulary_segmentation",
                  "--set", f"SubModules.BoxPromptSegmentation.model_dir={model}",
                  "--set", f"SubModules.PointPromptSegmentation.model_dir={model}"], tmp_path)
    try:
        box = [10, 20, 100, 80]
        result = ok_result(srv.post("/open-vocabulary-segmentation", {"image": b64(seg_images["a"]), "promptType": "box", "prompt": [box]}))
        (m,) = result["masks"]
        assert m["size"] == [120, 200]
        assert iou(decode_rle({"size": m["size"], "counts": m["rleResult"]}), box_mask(box, 120, 200)) > 0.97
        import pycocotools.mask

        served = pycocotools.mask.decode(m)  # the document's call, on the mask as served
        assert served.shape == (120, 200) and iou(served.astype(bool), box_mask(box, 120, 200)) > 0.97
        result = ok_result(srv.post("/open-vocabulary-segmentation", {"image": b64(seg_images["a"]), "promptType": "point", "prompt": [[50, 60]]}))
        (m,) = result["masks"]
        assert iou(decode_rle({"size": m["size"], "counts": m["rleResult"]}), disc(120, 200, 50, 60)) > 0.95
    finally:
        srv.stop()
