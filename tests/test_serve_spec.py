"""``pxflow serve`` answers from the pipeline's spec: a pipeline from outside pxflow is served with no edit to
pxflow, one without endpoints is refused naming why, and SAM masks decode with pycocotools as PaddleX's
document does. The app runs in-process (FastAPI's TestClient runs the real ASGI app, lifespan included)."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.support.cli import run_pxflow, single_error_line
from tests.support.seg_models import seg_images, seg_models  # noqa: F401  (session fixtures)

BUDGET = 50_000_000


def _png(value: int, shape=(20, 30)) -> str:
    return base64.b64encode(cv2.imencode(".png", np.full((*shape, 3), value, np.uint8))[1].tobytes()).decode()


@pytest.fixture
def serve_app(monkeypatch):
    """``serve_app(pipeline)``: a started TestClient on ``create_app(pipeline)`` (the budget env set as the CLI sets it)."""
    from fastapi.testclient import TestClient

    from pxflow.flows.serve import Limits, ServeOptions, create_app

    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(BUDGET))
    clients = []

    def start(pipeline, **options):
        client = TestClient(create_app(pipeline, ServeOptions(limits=Limits(max_pixels_in_flight=BUDGET), **options)))
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def toy_registered(monkeypatch, tmp_path):
    """The toy classifier registered with a spec that declares its endpoint; the registry restored afterwards."""
    import tests.support.toy_classifier as toy
    from tests.support.toy_classifier.model import build

    from pxflow.pipelines import registry
    from pxflow.pipelines.spec import Endpoint, PipelineSpec

    monkeypatch.setattr(registry, "PIPELINES", dict(registry.PIPELINES))
    registry.register_pipeline(PipelineSpec(
        name="toy_classifier", pipeline="tests.support.toy_classifier.pipeline:ToyClassifierPipeline", config=toy.CONFIG,
        endpoints=(Endpoint("/image-classification", "tests.support.toy_classifier.serving:handle"),),
    ))
    return toy, build(str(tmp_path / "toy_model"))


def test_a_pipeline_from_outside_pxflow_is_served_from_its_spec(toy_registered, serve_app):
    from pxflow import create_pipeline

    toy, model = toy_registered
    pipeline = create_pipeline(toy.CONFIG, config={"SubModules": {"ImageClassification": {"model_dir": model}}})
    client = serve_app(pipeline)
    assert client.get("/ready").json()["endpoints"] == ["/image-classification"]
    expected = np.exp(3) / (np.exp(3) + np.exp(-3))  # channel means -1 (black) / +1 (white), weights -+1
    for value, cls_id, name in ((0, 0, "dark"), (255, 1, "bright")):
        resp = client.post("/image-classification", json={"image": _png(value)})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert set(body) == {"logId", "errorCode", "errorMsg", "result"}
        assert body["errorCode"] == 0 and body["errorMsg"] == "Success" and body["logId"]
        [category] = body["result"]["categories"]
        assert (category["id"], category["name"]) == (cls_id, name)
        assert category["score"] == pytest.approx(expected, rel=1e-5)
        drawn = cv2.imdecode(np.frombuffer(base64.b64decode(body["result"]["image"]), np.uint8), cv2.IMREAD_COLOR)
        assert drawn.shape[:2] == (20, 30)
    # the shared parts wrap the plug-in's handler: PaddleX's failure envelope, the limits, unknown routes
    bad = client.post("/image-classification", json={"image": "not base64 !!"})
    assert bad.status_code == 422 and bad.json()["errorCode"] == 422 and "base64" in bad.json()["errorMsg"]
    missing = client.post("/image-classification", json={})
    assert missing.status_code == 422 and "image" in missing.json()["errorMsg"]
    assert client.post("/object-detection", json={"image": _png(0)}).status_code == 404
    assert 'pxflow_serve_requests_total{endpoint="/image-classification",status="200"} 2.0' in client.get("/metrics").text


def test_a_pipeline_without_endpoints_is_refused_naming_why(tmp_path, monkeypatch):
    """The toy as registered by its own package (a spec without endpoints): create_app and the CLI both refuse it."""
    import tests.support.toy_classifier as toy
    from tests.support.toy_classifier.model import build

    from pxflow.flows.serve import Limits, ServeOptions, create_app, endpoints_for

    with pytest.raises(ValueError, match="'toy_classifier' declares no serving endpoints"):
        endpoints_for("toy_classifier")
    model = build(str(tmp_path / "toy_model"))
    # the stock CLI does not import the toy: a sitecustomize on PYTHONPATH does, as an installed plug-in would
    (tmp_path / "sitecustomize.py").write_text("import tests.support.toy_classifier\n")
    proc = run_pxflow(tmp_path, "serve", "--pipeline", toy.CONFIG, "--model-dir", model, "--port", "9",
                      PYTHONPATH=f"{tmp_path}:{ROOT}")
    line = single_error_line(proc, tmp_path)
    assert line.startswith("pxflow serve: cannot serve pipeline")
    assert "'toy_classifier' declares no serving endpoints" in line and "PipelineSpec.endpoints" in line
    assert proc.stdout == ""
    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(BUDGET))
    with pytest.raises(ValueError, match="declares no serving endpoints"):
        create_app(SimpleNamespace(pipeline_name="toy_classifier"), ServeOptions(limits=Limits(max_pixels_in_flight=BUDGET)))


def test_sam_masks_decode_with_pycocotools_as_the_paddlex_document_does(seg_models, seg_images, serve_app):  # noqa: F811
    from pycocotools import mask as mask_util

    from pxflow import create_pipeline

    subs = {"BoxPromptSegmentation": {"model_dir": seg_models["sam_box_split"]},
            "PointPromptSegmentation": {"model_dir": seg_models["sam_point_split"]}}
    pipeline = create_pipeline("open_vocabulary_segmentation", config={"SubModules": subs})
    client = serve_app(pipeline, visualize=False)
    boxes = [[10, 10, 100, 80], [20, 30, 60, 110]]
    image = base64.b64encode(Path(seg_images["a"]).read_bytes()).decode()
    resp = client.post("/open-vocabulary-segmentation", json={"image": image, "promptType": "box", "prompt": boxes})
    assert resp.status_code == 200, resp.text
    masks = resp.json()["result"]["masks"]
    want = next(pipeline.predict(seg_images["a"], prompt_type="box", prompt=boxes))["masks"]
    assert len(masks) == len(want) == 2
    for mask, expected in zip(masks, want):
        decoded = mask_util.decode(mask)  # exactly as PaddleX's document: the returned dict as it is
        assert decoded.shape == (120, 200)
        assert np.array_equal(decoded.astype(bool), np.asarray(expected, bool))
        assert mask["rleResult"] == mask["counts"]


def test_serve_flags_take_their_defaults_from_the_options_that_own_them(monkeypatch):
    """``ServeOptions`` and ``Limits`` own the serve defaults; the CLI flags read them (no second copy to drift):
    with the owners' defaults changed, the options an unflagged ``pxflow serve`` builds change with them, and a
    flag still wins."""
    import dataclasses

    from pxflow.flows.cli.serve import build_parser, serve_options
    from pxflow.flows.serve import Limits, ServeOptions

    fields = {**{f"serve.{f.name}": f for f in dataclasses.fields(ServeOptions)},
              **{f"limits.{f.name}": f for f in dataclasses.fields(Limits)}}
    changed = {"serve.max_batch": 3, "serve.window_ms": 1.5, "serve.workers": 5, "serve.metric_type": "L2",
               "limits.max_queue": 7, "limits.max_body_bytes": 3 * 1024 * 1024, "limits.request_timeout_s": 9.0,
               "limits.fetch_timeout_s": 4.0, "limits.max_topk": 11, "limits.max_prompts": 12,
               "limits.admission_timeout_s": 2.5}
    for key, value in changed.items():
        monkeypatch.setattr(fields[key], "default", value)
    options = serve_options(build_parser().parse_args(["--pipeline", "object_detection"]), in_flight=BUDGET)
    assert (options.max_batch, options.window_ms, options.workers, options.metric_type) == (3, 1.5, 5, "L2")
    limits = options.limits
    assert (limits.max_queue, limits.max_body_bytes, limits.request_timeout_s, limits.fetch_timeout_s, limits.max_topk,
            limits.max_prompts, limits.admission_timeout_s) == (7, 3 * 1024 * 1024, 9.0, 4.0, 11, 12, 2.5)
    flagged = serve_options(build_parser().parse_args(["--pipeline", "object_detection", "--max-batch", "16",
                                                       "--max-queue", "64"]), in_flight=BUDGET)
    assert flagged.max_batch == 16 and flagged.limits.max_queue == 64
