"""``Pxflow.infer_workers``: concurrent batches change speed, never results, order or error isolation."""

from __future__ import annotations

import pytest

from pxflow.pipelines import create_pipeline
from tests.conftest import COCO_MINI, PICODET_ONNX, PICODET_PADDLE, require_shared


def _run(model_dir, inputs, **pxflow):
    config = {"SubModules": {"ObjectDetection": {"model_name": "PicoDet-XS", "model_dir": str(model_dir), "batch_size": pxflow.pop("batch_size", 1)}}}
    pipeline = create_pipeline("object_detection", config=config, **pxflow)
    return pipeline, [(r.index, r.json["res"]) for r in pipeline.predict(inputs, threshold=0.3)]


@pytest.mark.parametrize(
    "model_dir, batch_size", [(PICODET_ONNX, 1), (PICODET_PADDLE, 1), (PICODET_PADDLE, 3)], ids=["onnx", "paddle", "paddle-b3"]
)
def test_concurrent_inference_gives_the_sequential_results_in_order(model_dir, batch_size, tmp_path):
    require_shared()
    images = sorted(str(p) for p in (COCO_MINI / "images").iterdir())[:7]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    inputs = images[:3] + [str(corrupt), str(tmp_path / "missing.jpg")] + images[3:]
    _, sequential = _run(model_dir, inputs, infer_workers=1, cpu_threads=1, batch_size=batch_size)
    pipeline, concurrent = _run(model_dir, inputs, infer_workers=3, load_workers=2, prefetch=4, batch_size=batch_size)
    assert pipeline.settings.cpu_threads >= 1  # resolved from the cores when left null
    assert [i for i, _ in concurrent] == list(range(len(inputs)))
    assert [r["input_path"] for _, r in concurrent] == inputs
    assert concurrent == sequential  # same threads per run -> bit-identical boxes
    assert concurrent[3][1]["error"]["type"] == "decode_failed"
    assert concurrent[4][1]["error"]["type"] == "not_found"
    assert sum(len(r.get("boxes", [])) for _, r in concurrent) > 0


def test_on_error_raise_still_raises_with_concurrent_inference(tmp_path):
    require_shared()
    config = {"SubModules": {"ObjectDetection": {"model_name": "PicoDet-XS", "model_dir": str(PICODET_ONNX)}}}
    pipeline = create_pipeline("object_detection", config=config, infer_workers=2)
    with pytest.raises(Exception, match="missing"):
        list(pipeline.predict([str(tmp_path / "missing.jpg")], on_error="raise"))
