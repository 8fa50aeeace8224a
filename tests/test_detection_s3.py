"""Detection with the model and the images in a real S3 server (weed mini)."""

from __future__ import annotations

from pxflow.pipelines import create_pipeline
from pxflow.pipelines.io import storage
from tests.conftest import COCO_MINI, PICODET_ONNX, require_shared


def test_s3_model_dir_and_s3_inputs(s3_server, tmp_path, monkeypatch):
    require_shared()
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path / "cache"))
    model_prefix = s3_server.unique_prefix("models/PicoDet-XS")
    for f in PICODET_ONNX.iterdir():
        storage.upload_file(str(f), f"{model_prefix}/{f.name}")
    images = sorted((COCO_MINI / "images").glob("*.jpg"))[:3]
    image_prefix = s3_server.unique_prefix("images")
    for p in images:
        storage.upload_file(str(p), f"{image_prefix}/{p.name}")
    storage.write_bytes(f"{image_prefix}/readme.txt", b"not an image, skipped by the suffix filter")

    remote = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": model_prefix}}})
    local = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_ONNX)}}})
    # the staged copy is byte-identical to the original model
    assert remote.model.spec.sha256() == local.model.spec.sha256()

    from_s3 = list(remote.predict(image_prefix))
    assert [r["input_path"] for r in from_s3] == [f"{image_prefix}/{p.name}" for p in images]
    from_disk = list(local.predict([str(p) for p in images]))
    assert [r["boxes"] for r in from_s3] == [r["boxes"] for r in from_disk]
    (single,) = list(remote.predict(f"{image_prefix}/{images[0].name}"))
    assert single["boxes"] == from_disk[0]["boxes"]
    (missing,) = list(remote.predict(f"{image_prefix}/nope.jpg"))
    assert not missing.ok and missing.error_type == "not_found"
