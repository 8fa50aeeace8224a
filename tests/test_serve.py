"""``pxflow serve``: a real uvicorn server in a subprocess, stopped by PID, spoken to over HTTP.

Every endpoint returns PaddleX's fields; detection boxes equal ``predict()``'s on the same
image; PP-ShiTu indexes are versioned (build -> add -> remove -> infer, and an append through
the Python API racing an HTTP add keeps both); bad requests get a 4xx envelope and the server
stays healthy.
"""

from __future__ import annotations

import base64
import functools
import http.server
import socket
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.conftest import COCO_MINI, DRINK, PICODET_ONNX, require_shared
from tests.support.annotate_helpers import _png_header_only
from tests.support.serve_process import Server
from tests.support.seg_models import seg_images, seg_models  # noqa: F401  (session fixtures)
from tests.support.shitu_models import build_models, shitu_pipeline  # noqa: F401

def b64(path_or_bytes) -> str:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return base64.b64encode(data).decode()


def ok_result(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()
    assert set(body) == {"logId", "errorCode", "errorMsg", "result"}
    assert body["errorCode"] == 0 and body["errorMsg"] == "Success" and body["logId"]
    return body["result"]


def assert_error(resp: httpx.Response, status: int, *words: str) -> None:
    assert resp.status_code == status, resp.text[:500]
    body = resp.json()
    assert body["errorCode"] == status and body["logId"], body
    assert "Traceback" not in body["errorMsg"]
    for word in words:
        assert word in body["errorMsg"], body["errorMsg"]


def assert_jpeg(text: str, shape) -> None:
    image = cv2.imdecode(np.frombuffer(base64.b64decode(text), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == tuple(shape[:2])


def coco_images(n: int) -> list[Path]:
    require_shared()
    return sorted((COCO_MINI / "images").iterdir())[:n]


# ---------------------------------------------------------------- object detection (real PicoDet-XS)

#: det_server's pixel budget: one 4000 x 4000 request (2 units per pixel without visualisation) fits, two do not
STORM_BUDGET = 60_000_000

@pytest.fixture(scope="module")
def det_server(tmp_path_factory):
    require_shared()
    srv = Server(["--pipeline", "object_detection", "--model-dir", str(PICODET_ONNX), "--max-body-mb", "2",
                  "--allow-fetch-from", "127.0.0.2", "--fetch-timeout", "1",
                  "--max-pixels-in-flight", str(STORM_BUDGET), "--admission_timeout", "0"], tmp_path_factory.mktemp("det"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def det_pipeline():
    from pxflow import create_pipeline

    return create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_ONNX)}}})


def test_object_detection_matches_predict_and_rows(det_server, det_pipeline):
    total = 0
    for path in coco_images(4):
        result = ok_result(det_server.post("/object-detection", {"image": b64(path)}))
        assert set(result) == {"detectedObjects", "image"}
        want = next(det_pipeline.predict(str(path)))
        got = result["detectedObjects"]
        assert len(got) == len(want["boxes"])
        total += len(got)
        for obj, box in zip(got, want["boxes"]):
            assert set(obj) == {"bbox", "categoryId", "categoryName", "score"}
            assert obj["bbox"] == pytest.approx([float(v) for v in box["coordinate"]], abs=1e-4)
            assert obj["categoryId"] == box["cls_id"] and obj["categoryName"] == box["label"]
            assert obj["score"] == pytest.approx(float(box["score"]), abs=1e-6)
        records = want.object_records()  # what annotate writes to the objects table (tasks/rows.py)
        assert [r["cls_id"] for r in records] == [o["categoryId"] for o in got]
        assert np.allclose([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in records], [o["bbox"] for o in got], atol=1e-4)
        assert_jpeg(result["image"], cv2.imread(str(path)).shape)
    assert total >= 4


def test_object_detection_threshold_and_url(det_server, det_pipeline, tmp_path):
    path = coco_images(1)[0]
    high = ok_result(det_server.post("/object-detection", {"image": b64(path), "threshold": 0.8, "visualize": False}))
    assert high["image"] is None
    assert all(o["score"] >= 0.8 for o in high["detectedObjects"])
    assert len(high["detectedObjects"]) == len(next(det_pipeline.predict(str(path), threshold=0.8))["boxes"])
    # per-class thresholds ({categoryId: threshold}; JSON keys are strings)
    per_class = ok_result(det_server.post("/object-detection", {"image": b64(path), "threshold": {"56": 0.99, "62": 0.1}}))
    want = next(det_pipeline.predict(str(path), threshold={56: 0.99, 62: 0.1}))["boxes"]
    assert [o["categoryId"] for o in per_class["detectedObjects"]] == [b["cls_id"] for b in want]
    assert 56 not in [b["cls_id"] for b in want] and 62 in [b["cls_id"] for b in want]
    # a URL on an address the allowlist names (127.0.0.2) is fetched
    (tmp_path / "a.jpg").write_bytes(path.read_bytes())
    (tmp_path / "empty.jpg").write_bytes(b"")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/redirect"):  # an allowed host redirecting to a loopback one
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/a.jpg")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.2", 0))
    silent.listen(4)  # accepts connections, never answers
    try:
        base = f"http://127.0.0.2:{httpd.server_address[1]}"
        by_url = ok_result(det_server.post("/object-detection", {"image": f"{base}/a.jpg"}))
        by_b64 = ok_result(det_server.post("/object-detection", {"image": b64(path)}))
        assert by_url["detectedObjects"] == by_b64["detectedObjects"]
        # the same server on 127.0.0.1 is loopback and not on the list: refused without fetching
        assert_error(det_server.post("/object-detection", {"image": f"{base}/a.jpg".replace("127.0.0.2", "127.0.0.1")}), 403, "non-public")
        assert_error(det_server.post("/object-detection", {"image": f"{base}/redirect"}), 403, "127.0.0.1")
        assert_error(det_server.post("/object-detection", {"image": f"{base}/empty.jpg"}), 422, "0 bytes")
        assert_error(det_server.post("/object-detection", {"image": f"{base}/missing.jpg"}), 422, "404")
        started = time.monotonic()
        assert_error(det_server.post("/object-detection", {"image": f"http://127.0.0.2:{silent.getsockname()[1]}/x.jpg"}), 504, "longer")
        assert time.monotonic() - started < 10
        assert det_server.healthy()
    finally:
        silent.close()
        httpd.shutdown()


def test_concurrent_requests_are_batched_and_exact(det_server, det_pipeline):
    paths = coco_images(8)
    want = {str(p): [b["coordinate"] for b in next(det_pipeline.predict(str(p)))["boxes"]] for p in paths}
    out: dict[str, list] = {}

    def one(p):
        with httpx.Client(base_url=det_server.url, timeout=60, trust_env=False) as c:
            r = c.post("/object-detection", json={"image": b64(p), "visualize": False})
            out[str(p)] = [o["bbox"] for o in ok_result(r)["detectedObjects"]]

    threads = [threading.Thread(target=one, args=(p,)) for p in paths * 2]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for p in paths:
        assert np.allclose(np.array(out[str(p)]), np.array(want[str(p)], dtype=float), atol=1e-4)
    metrics = det_server.client.get("/metrics").text
    counts = [line for line in metrics.splitlines() if line.startswith("pxflow_serve_batch_size_count")]
    sums = [line for line in metrics.splitlines() if line.startswith("pxflow_serve_batch_size_sum")]
    calls, images = float(counts[0].split()[-1]), float(sums[0].split()[-1])
    assert images > calls  # some model calls took more than one request's image


def test_bad_requests_get_4xx_and_the_server_keeps_serving(det_server):
    path = coco_images(1)[0]
    bomb = _png_header_only(30000, 30000)
    cases = [
        (det_server.post("/object-detection", {"threshold": 0.5}), 422, "image"),
        (det_server.post("/object-detection", {"image": "not base64 !!"}), 422, "base64"),
        (det_server.post("/object-detection", {"image": ""}), 422, "image"),
        (det_server.post("/object-detection", {"image": "data:image/png;base64,"}), 422, "empty (0 bytes)"),  # a 0-byte file
        (det_server.post("/object-detection", {"image": b64(b"\x00" * 64)}), 422, "image"),
        (det_server.post("/object-detection", {"image": b64(bomb)}), 413, "too_large"),
        (det_server.post("/object-detection", {"image": "http://127.0.0.1:9/x.jpg"}), 403, "127.0.0.1"),
        (det_server.post("/object-detection", {"image": "http://10.1.2.3/x.jpg"}), 403, "10.1.2.3"),
        (det_server.post("/object-detection", {"image": "http://169.254.169.254/latest/meta-data"}), 403, "non-public"),
        (det_server.post("/object-detection", {"image": "http://[::1]:9/x.jpg"}), 403, "non-public"),
        (det_server.post("/object-detection", {"image": "x" * (3 * 1024 * 1024)}), 413, "limit"),
        (det_server.post("/object-detection", content=b"{not json"), 400, "JSON"),
        (det_server.post("/object-detection", {"image": b64(path), "threshold": "high"}), 422, "threshold"),
        (det_server.post("/instance-segmentation", {"image": b64(path)}), 404, ""),
    ]
    for resp, status, word in cases:
        assert_error(resp, status, word)
    assert det_server.healthy()
    assert ok_result(det_server.post("/object-detection", {"image": b64(path)}))["detectedObjects"]
    assert det_server.client.get("/ready").json()["ready"] is True


def zeros_png(side: int) -> bytes:
    """A side x side PNG of zeros: huge when decoded, a few hundred KB as a file."""
    ok, buf = cv2.imencode(".png", np.zeros((side, side), np.uint8))
    assert ok
    return buf.tobytes()


def metric(text: str, name: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(name + " ")).split()[-1])


def test_pixel_storms_are_refused_and_rss_stays_under_the_stated_bound(det_server):
    """Eight 14000 x 14000 PNGs at once (each under the 200 M per-image limit): 413 from their headers, nothing
    decoded; eight 4000 x 4000 at once: the budget admits what fits and answers 503 to the rest. The server's
    RSS, sampled throughout, stays under the bound /metrics states, and it serves normally afterwards."""
    psutil = pytest.importorskip("psutil")
    huge, big = b64(zeros_png(14000)), b64(zeros_png(4000))
    assert len(huge) < 1024 * 1024
    first = det_server.client.get("/metrics").text
    bound = metric(first, "pxflow_serve_memory_bound_bytes")
    assert metric(first, "pxflow_serve_pixels_in_flight_limit") == STORM_BUDGET
    process = psutil.Process(det_server.proc.pid)
    samples: dict[str, list[float]] = {"rss": [], "in_flight": []}
    stop = threading.Event()

    def sample():
        with httpx.Client(base_url=det_server.url, timeout=30, trust_env=False) as c:
            while not stop.is_set():
                samples["rss"].append(process.memory_info().rss)
                samples["in_flight"].append(metric(c.get("/metrics").text, "pxflow_serve_pixels_in_flight"))
                time.sleep(0.02)

    def storm(image: str) -> list[httpx.Response]:
        go = threading.Barrier(8)
        out: list[httpx.Response] = []

        def one():
            with httpx.Client(base_url=det_server.url, timeout=120, trust_env=False) as c:
                go.wait()
                out.append(c.post("/object-detection", json={"image": image, "visualize": False}))

        threads = [threading.Thread(target=one) for _ in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        return out

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for resp in storm(huge):
            assert_error(resp, 413, "--max-request-pixels")
        big_answers = storm(big)
    finally:
        stop.set()
        sampler.join()
    statuses = sorted(r.status_code for r in big_answers)
    assert set(statuses) <= {200, 503} and statuses[0] == 200 and statuses[-1] == 503, statuses
    for resp in big_answers:
        if resp.status_code == 503:
            assert_error(resp, 503, "--max-pixels-in-flight")
        else:
            assert ok_result(resp)["image"] is None
    assert samples["rss"] and max(samples["rss"]) < bound, (max(samples["rss"]), bound)
    assert max(samples["in_flight"]) <= STORM_BUDGET
    assert det_server.healthy()
    assert ok_result(det_server.post("/object-detection", {"image": b64(coco_images(1)[0])}))["detectedObjects"]
    after = det_server.client.get("/metrics").text
    assert metric(after, "pxflow_serve_pixels_in_flight") == 0
    assert metric(after, "pxflow_serve_peak_rss_bytes") < bound


def test_small_object_detection(tmp_path):
    require_shared()
    srv = Server(["--pipeline", "small_object_detection", "--model-dir", str(PICODET_ONNX)], tmp_path)
    try:
        from pxflow import create_pipeline

        pipe = create_pipeline("small_object_detection",
                               config={"SubModules": {"SmallObjectDetection": {"model_dir": str(PICODET_ONNX)}}})
        path = coco_images(1)[0]
        result = ok_result(srv.post("/small-object-detection", {"image": b64(path), "threshold": 0.3}))
        want = next(pipe.predict(str(path), threshold=0.3))["boxes"]
        assert len(want) == len(result["detectedObjects"]) > 0
        assert np.allclose([o["bbox"] for o in result["detectedObjects"]], [b["coordinate"] for b in want], atol=1e-4)
        assert [o["categoryName"] for o in result["detectedObjects"]] == [b["label"] for b in want]
        assert_jpeg(result["image"], cv2.imread(str(path)).shape)
    finally:
        srv.stop()


# ---------------------------------------------------------------- segmentation (generated models)

def test_instance_segmentation(tmp_path, seg_models, seg_images):  # noqa: F811
    from pxflow.pipelines.ops.masks import decode_rle
    from pxflow import create_pipeline

    srv = Server(["--pipeline", "instance_segmentation", "--model-dir", seg_models["maskbox"]], tmp_path)
    try:
        pipe = create_pipeline("instance_segmentation",
                               config={"SubModules": {"InstanceSegmentation": {"model_dir": seg_models["maskbox"]}}})
        result = ok_result(srv.post("/instance-segmentation", {"image": b64(seg_images["a"]), "threshold": 0.3}))
        want = next(pipe.predict(seg_images["a"], threshold=0.3))
        assert set(result) == {"instances", "image"}
        assert len(result["instances"]) == len(want["boxes"]) > 0
        for inst, box, mask in zip(result["instances"], want["boxes"], want["masks"]):
            assert set(inst) == {"bbox", "categoryId", "categoryName", "score", "mask"}
            assert set(inst["mask"]) == {"rleResult", "size"} and inst["mask"]["size"] == [120, 200]
            assert inst["bbox"] == pytest.approx(list(map(float, box["coordinate"])), abs=1e-4)
            decoded = decode_rle({"size": inst["mask"]["size"], "counts": inst["mask"]["rleResult"]})
            assert np.array_equal(decoded, np.asarray(mask, bool))
        assert_jpeg(result["image"], (120, 200))
        assert_error(srv.post("/instance-segmentation", {"image": b64(seg_images["bad"])}), 422, "decode")
        assert srv.healthy()
    finally:
        srv.stop()


def test_open_vocabulary_segmentation(tmp_path, seg_models, seg_images):  # noqa: F811
    from pxflow.pipelines.ops.masks import decode_rle
    from pxflow import create_pipeline

    subs = {"BoxPromptSegmentation": {"model_dir": seg_models["sam_box_split"]},
            "PointPromptSegmentation": {"model_dir": seg_models["sam_point_split"]}}
    srv = Server(["--pipeline", "open_vocabulary_segmentation",
                  "--set", f"SubModules.BoxPromptSegmentation.model_dir={seg_models['sam_box_split']}",
                  "--set", f"SubModules.PointPromptSegmentation.model_dir={seg_models['sam_point_split']}"], tmp_path)
    try:
        pipe = create_pipeline("open_vocabulary_segmentation", config={"SubModules": subs})
        boxes = [[10, 10, 100, 80], [20, 30, 60, 110]]
        result = ok_result(srv.post("/open-vocabulary-segmentation",
                                    {"image": b64(seg_images["a"]), "promptType": "box", "prompt": boxes}))
        want = next(pipe.predict(seg_images["a"], prompt_type="box", prompt=boxes))
        assert len(result["masks"]) == 2 and result["maskInfos"] == [{"label": "box_prompt", "prompt": [float(v) for v in b]} for b in boxes]
        for m, mask in zip(result["masks"], want["masks"]):
            assert m["size"] == [120, 200]
            assert np.array_equal(decode_rle({"size": m["size"], "counts": m["rleResult"]}), np.asarray(mask, bool))
        assert_jpeg(result["image"], (120, 200))
        points = ok_result(srv.post("/open-vocabulary-segmentation",
                                    {"image": b64(seg_images["a"]), "prompt_type": "point", "prompt": [[50, 50]]}))
        assert points["maskInfos"] == [{"label": "point_prompt", "prompt": [50.0, 50.0]}] and len(points["masks"]) == 1
        assert_error(srv.post("/open-vocabulary-segmentation",
                              {"image": b64(seg_images["a"]), "promptType": "box", "prompt": [[500, 500, 600, 600]]}),
                     422, "invalid_prompt")
        assert_error(srv.post("/open-vocabulary-segmentation",
                              {"image": b64(seg_images["a"]), "promptType": "text", "prompt": [[1, 2]]}), 422, "promptType")
        assert srv.healthy()
        # 10 000 prompts in a small body (a full-image mask each): refused before the image is read
        storm = [[1, 1, 50 + i % 100, 50 + i % 60] for i in range(10_000)]
        assert_error(srv.post("/open-vocabulary-segmentation", {"image": b64(seg_images["a"]), "promptType": "box",
                                                                "prompt": storm}), 413, "--max-prompts")
        assert srv.healthy()
        assert len(ok_result(srv.post("/open-vocabulary-segmentation",
                                      {"image": b64(seg_images["a"]), "promptType": "box", "prompt": boxes}))["masks"]) == 2
    finally:
        srv.stop()


# ---------------------------------------------------------------- PP-ShiTuV2 (generated models, drink gallery)

def drink_pairs(classes: int, per_class: int, skip: int = 0) -> list[tuple[Path, str]]:
    require_shared()
    by_label: dict[str, list[Path]] = {}
    for line in (DRINK / "gallery" / "drink_label.txt").read_text(encoding="utf-8").splitlines():
        rel, _, label = line.partition("\t")
        by_label.setdefault(label.strip(), []).append(DRINK / "gallery" / rel.strip())
    out = []
    for label in list(by_label)[:classes]:
        out += [(p, label) for p in by_label[label][skip: skip + per_class]]
    return out


def test_shitu_index_lifecycle_and_concurrent_append(tmp_path, shitu_pipeline):  # noqa: F811
    from pxflow.pipelines.retrieval.versions import IndexRepo

    models = build_models()
    root = tmp_path / "indexes"
    srv = Server(["--pipeline", "PP-ShiTuV2", "--index-root", str(root),
                  "--set", f"SubModules.Detection.model_dir={models['det']}",
                  "--set", f"SubModules.Recognition.model_dir={models['rec']}"], tmp_path)
    try:
        pairs = drink_pairs(3, 2)
        built = ok_result(srv.post("/shitu-index-build", {"imageLabelPairs": [{"image": b64(p), "label": l} for p, l in pairs]}))
        key = built["indexKey"]
        assert built["idMap"] == {str(i): l for i, (_, l) in enumerate(pairs)}
        repo = IndexRepo(str(root), key)
        assert repo.current_version() == "v000001"

        # two HTTP adds and two Python-API appends race on the same index: all four survive
        http_new = [drink_pairs(3, 1, skip=2), drink_pairs(3, 1, skip=3)]
        api_new = [drink_pairs(4, 1, skip=3)[-1:], drink_pairs(5, 1, skip=3)[-1:]]
        model = shitu_pipeline.rec_model.describe()
        api_feats = [shitu_pipeline.embed_gallery([str(p) for p, _ in batch], [l for _, l in batch]) for batch in api_new]
        go = threading.Barrier(4)
        responses: list = []

        def via_api(feats, labels):
            go.wait()
            IndexRepo(str(root), key).append(feats, labels, [], {"model": model})

        def via_http(batch):
            body = {"indexKey": key, "imageLabelPairs": [{"image": b64(p), "label": l} for p, l in batch]}
            go.wait()
            with httpx.Client(base_url=srv.url, timeout=120, trust_env=False) as c:
                responses.append(c.post("/shitu-index-add", json=body))

        threads = [threading.Thread(target=via_api, args=(f, l)) for f, l, _ in api_feats]
        threads += [threading.Thread(target=via_http, args=(b,)) for b in http_new]
        [t.start() for t in threads]
        [t.join() for t in threads]
        for resp in responses:
            ok_result(resp)
        added = [pair for batch in http_new + api_new for pair in batch]
        final = repo.load()
        assert len(final) == len(pairs) + len(added)
        assert sorted(final.id_map.values()) == sorted(l for _, l in pairs + added)
        # one parent chain of build + 4 appends (a writer that lost the swap redid its append on a
        # newer number, so the numbers may skip the ones losers had claimed)
        history = repo.history()
        assert len(history) == 5 and history[-1] == "v000001"
        assert [repo.manifest(v)["operation"] for v in history] == ["append"] * 4 + ["build"]

        removed = ok_result(srv.post("/shitu-index-remove", {"indexKey": key, "ids": [0, 1]}))
        assert "0" not in removed["idMap"] and "1" not in removed["idMap"]
        assert len(removed["idMap"]) == len(final) - 2 and len(repo.history()) == 6
        after_remove = repo.current_version()

        query = pairs[2][0]
        infer = ok_result(srv.post("/shitu-infer", {"image": b64(query), "indexKey": key}))
        want = next(shitu_pipeline.predict(str(query), index=f"{root}/{key}"))
        assert len(infer["detectedObjects"]) == len(want["boxes"]) > 0
        for obj, box in zip(infer["detectedObjects"], want["boxes"]):
            assert set(obj) == {"bbox", "recResults", "score"}
            assert obj["bbox"] == pytest.approx(list(map(float, box["coordinate"])), abs=1e-4)
            assert [r["label"] for r in obj["recResults"]] == [l for l in box["labels"] if l is not None]
        assert_jpeg(infer["image"], cv2.imread(str(query)).shape)
        pinned = ok_result(srv.post("/shitu-infer", {"image": b64(query), "indexKey": f"{key}@v000001", "visualize": False}))
        assert pinned["image"] is None and pinned["detectedObjects"]

        # topk 1e9 on a small index: faiss would allocate 1e9 results per query; refused before decoding
        assert_error(srv.post("/shitu-infer", {"image": b64(query), "indexKey": key, "topk": 10**9}), 422, "--max-topk")
        assert ok_result(srv.post("/shitu-infer", {"image": b64(query), "indexKey": key, "topk": 1000,
                                                   "visualize": False}))["detectedObjects"]
        assert_error(srv.post("/shitu-infer", {"image": b64(query), "indexKey": "no-such-index"}), 404, "unknown")
        assert_error(srv.post("/shitu-infer", {"image": b64(query), "indexKey": "../etc"}), 422, "indexKey")
        assert_error(srv.post("/shitu-infer", {"image": b64(query), "indexKey": f"{key}@v000099"}), 404, "v000099")
        assert_error(srv.post("/shitu-index-add", {"indexKey": "nope", "imageLabelPairs": [{"image": b64(query), "label": "x"}]}), 404, "unknown")
        assert_error(srv.post("/shitu-index-remove", {"indexKey": key, "ids": [0]}), 422, "not in the current version")
        assert_error(srv.post("/shitu-index-build", {"imageLabelPairs": []}), 422, "imageLabelPairs")
        assert repo.current_version() == after_remove  # refused operations published nothing
        assert srv.healthy()
    finally:
        srv.stop()


def test_shitu_index_root_on_s3(tmp_path, s3_server, shitu_pipeline):  # noqa: F811
    """``--index-root s3://...``: build, add and infer publish and read versions in a real S3 server."""
    from pxflow.pipelines.retrieval.versions import IndexRepo

    models = build_models()
    root = s3_server.unique_prefix("serve-indexes")
    srv = Server(["--pipeline", "PP-ShiTuV2", "--index-root", root,
                  "--set", f"SubModules.Detection.model_dir={models['det']}",
                  "--set", f"SubModules.Recognition.model_dir={models['rec']}"], tmp_path)
    try:
        pairs = drink_pairs(3, 2)
        key = ok_result(srv.post("/shitu-index-build", {"imageLabelPairs": [{"image": b64(p), "label": l} for p, l in pairs]}))["indexKey"]
        added = drink_pairs(3, 1, skip=2)
        ok_result(srv.post("/shitu-index-add", {"indexKey": key, "imageLabelPairs": [{"image": b64(p), "label": l} for p, l in added]}))
        repo = IndexRepo(root, key)
        assert repo.current_version() == "v000002" and repo.history() == ["v000002", "v000001"]
        assert sorted(repo.load().id_map.values()) == sorted(l for _, l in pairs + added)

        query = pairs[2][0]
        infer = ok_result(srv.post("/shitu-infer", {"image": b64(query), "indexKey": key, "visualize": False}))
        want = next(shitu_pipeline.predict(str(query), index=f"{root}/{key}"))
        assert len(infer["detectedObjects"]) == len(want["boxes"]) > 0
        for obj, box in zip(infer["detectedObjects"], want["boxes"]):
            assert [r["label"] for r in obj["recResults"]] == [l for l in box["labels"] if l is not None]
    finally:
        srv.stop()
