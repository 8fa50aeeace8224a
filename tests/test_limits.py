"""Limits found by an adversarial pass: pixels in flight, the per-image pixel limit, threshold validation."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from typing import Any, Sequence

import numpy as np
import pytest
from PIL import Image

from pxflow.pipelines.base import BasePipeline, Prepared
from pxflow.pipelines.io import images as images_module
from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.images import decode_image, probe_header
from pxflow.pipelines.ops.boxes import parse_threshold
from pxflow.pipelines.prefetch import pixel_budget
from pxflow.pipelines.registry import create_pipeline
from tests.conftest import PICODET_ONNX, require_shared

SIDE = 6000
PIXELS = SIDE * SIDE  # 36 M per test image
COLOURS = [(10 * i + 5, 200 - 20 * i, (37 * i) % 256) for i in range(8)]  # RGB, one per image


# ---------------------------------------------------------------- cheap big PNGs

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _ihdr(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour RGB PNG, built row by row (first row raw, the others 'Up' filtered zeros)."""
    comp = zlib.compressobj(6)
    parts = [comp.compress(b"\x00" + bytes(rgb) * width)]
    up = b"\x02" + bytes(3 * width)
    rows, block = height - 1, up * 256
    while rows >= 256:
        parts.append(comp.compress(block))
        rows -= 256
    parts += [comp.compress(up * rows), comp.flush()]
    return _ihdr(width, height) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def header_only_png(width: int, height: int) -> bytes:
    """IHDR and IEND, no pixel data: its size is all a header check can see."""
    return _ihdr(width, height) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def big_pngs(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("big_pngs")
    paths = []
    for i, rgb in enumerate(COLOURS):
        path = d / f"img_{i}.png"
        path.write_bytes(solid_png(SIDE, SIDE, rgb))
        paths.append(str(path))
    return paths


# ---------------------------------------------------------------- a slow, cheap pipeline

class CornerColour(BasePipeline):
    """Reports each image's top-left BGR colour and its size; sleeps so that loads pile up behind it."""

    pipeline_name = "corner_colour_test"

    def __init__(self, config: dict[str, Any], delay: float = 0.15) -> None:
        super().__init__(config)
        self.delay = delay

    @property
    def batch_size(self) -> int:
        return int(self.config.get("batch_size", 1))

    def run_batch(self, batch: Sequence[Prepared], **kwargs: Any):
        from pxflow.pipelines.results import BaseResult

        time.sleep(self.delay)
        return [
            BaseResult({"input_path": p.item.uri, "bgr": [int(v) for v in p.image[0, 0]], "shape": list(p.image.shape)})
            for p in batch
        ]


class DecodedPixels:
    """An independent count of decoded pixels alive: + at each ``cv2.imdecode`` call (before it decodes),
    - when the consumer is done with a result. Also checks the budget already counts an image it decodes."""

    def __init__(self, monkeypatch) -> None:
        self.lock = threading.Lock()
        self.alive = 0
        self.peak = 0
        self.unreserved_decodes = 0
        real = images_module.cv2.imdecode

        def imdecode(buf, flags):
            with self.lock:
                self.alive += PIXELS
                self.peak = max(self.peak, self.alive)
                if pixel_budget().in_flight < PIXELS:
                    self.unreserved_decodes += 1
            return real(buf, flags)

        monkeypatch.setattr(images_module.cv2, "imdecode", imdecode)

    def consume(self, results) -> list:
        out = []
        for result in results:
            out.append((result["input_path"], result["bgr"], result["shape"]))
            with self.lock:
                self.alive -= PIXELS
            del result
        return out


def _expected(paths):
    return [(p, [b, g, r], [SIDE, SIDE, 3]) for p, (r, g, b) in zip(paths, COLOURS)]


def _fresh_budget():
    budget = pixel_budget()
    assert budget.in_flight == 0, "another predict() call left pixels reserved"
    budget.reset_peak()
    return budget


def _finishes(fn, timeout: float = 120.0):
    """Run ``fn`` in a thread; a deadlock fails the test instead of hanging the suite."""
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # pragma: no cover - reported below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"predict() did not finish within {timeout}s (deadlock?)"
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---------------------------------------------------------------- pixels in flight

BUDGET = 100_000_000  # room for two 36 M images, not three


@pytest.mark.parametrize("infer_workers", [1, 2])
def test_pixels_in_flight_never_exceed_the_budget(big_pngs, monkeypatch, infer_workers):
    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(BUDGET))
    counter = DecodedPixels(monkeypatch)
    budget = _fresh_budget()
    grants: list[int] = []
    remove = budget.add_observer(lambda event, pixels, in_flight: grants.append(in_flight) if event == "grant" else None)
    try:
        pipe = CornerColour({"Pxflow": {"load_workers": 4, "prefetch": 8, "infer_workers": infer_workers}})
        got = _finishes(lambda: counter.consume(pipe.predict(big_pngs)))
    finally:
        remove()
    assert got == _expected(big_pngs)  # complete and in input order
    assert len(grants) == len(big_pngs)
    assert max(grants) <= BUDGET and budget.peak <= BUDGET
    assert budget.peak >= 2 * PIXELS  # it did prefetch (two fit)
    assert budget.overflows == 0
    assert counter.peak <= BUDGET  # what was really decoded and alive agrees
    assert counter.unreserved_decodes == 0  # every image was reserved before it was decoded
    assert budget.in_flight == 0


def test_without_the_budget_the_same_run_holds_more(big_pngs, monkeypatch):
    """The control: the loader threads and window alone let more than BUDGET pile up."""
    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", "0")  # no limit
    counter = DecodedPixels(monkeypatch)
    budget = _fresh_budget()
    pipe = CornerColour({"Pxflow": {"load_workers": 4, "prefetch": 8}}, delay=0.4)
    got = _finishes(lambda: counter.consume(pipe.predict(big_pngs)))
    assert got == _expected(big_pngs)
    assert counter.peak > BUDGET and budget.peak > BUDGET


def test_an_image_larger_than_the_budget_runs_alone(big_pngs, monkeypatch):
    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(PIXELS // 4))
    counter = DecodedPixels(monkeypatch)
    budget = _fresh_budget()
    pipe = CornerColour({"Pxflow": {"load_workers": 4, "prefetch": 8}}, delay=0.05)
    got = _finishes(lambda: counter.consume(pipe.predict(big_pngs[:4])))
    assert got == _expected(big_pngs[:4])
    assert budget.peak == PIXELS and counter.peak == PIXELS  # one at a time


def test_a_batch_larger_than_the_budget_still_completes(big_pngs, monkeypatch):
    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(BUDGET))
    DecodedPixels(monkeypatch)
    _fresh_budget()
    pipe = CornerColour({"batch_size": 3, "Pxflow": {"load_workers": 4, "prefetch": 8, "infer_workers": 2}}, delay=0.02)
    got = _finishes(lambda: [(r["input_path"], r["bgr"], r["shape"]) for r in pipe.predict(big_pngs[:7])])
    assert got == _expected(big_pngs[:7])
    assert pixel_budget().in_flight == 0


def test_concurrent_predict_calls_share_one_budget(big_pngs, monkeypatch):
    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(BUDGET))
    counter = DecodedPixels(monkeypatch)
    budget = _fresh_budget()
    pipe = CornerColour({"Pxflow": {"load_workers": 4, "prefetch": 8}}, delay=0.1)
    halves = [big_pngs[:4], big_pngs[4:]]
    out: dict[int, list] = {}

    def run(k):
        out[k] = counter.consume(pipe.predict(halves[k]))

    def both():
        threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    _finishes(both)
    assert out[0] == _expected(big_pngs)[:4] and out[1] == _expected(big_pngs)[4:]
    assert budget.peak <= BUDGET and counter.peak <= BUDGET
    assert budget.overflows == 0 and budget.in_flight == 0


def test_two_predict_generators_zipped_in_one_thread_do_not_deadlock(big_pngs, monkeypatch):
    """One call suspended at a yield holds pixels the other needs: after a grace period the other may exceed."""
    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(PIXELS * 3 // 2))
    budget = _fresh_budget()
    pipe = CornerColour({"Pxflow": {"load_workers": 2, "prefetch": 4}}, delay=0.01)
    pairs = _finishes(
        lambda: [(a["input_path"], b["input_path"]) for a, b in zip(pipe.predict(big_pngs[:2]), pipe.predict(big_pngs[2:4]))],
        timeout=60,
    )
    assert pairs == [(big_pngs[0], big_pngs[2]), (big_pngs[1], big_pngs[3])]
    assert budget.overflows >= 1 and budget.in_flight == 0


def test_closing_predict_early_gives_the_pixels_back(big_pngs, monkeypatch):
    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(BUDGET))
    budget = _fresh_budget()
    pipe = CornerColour({"Pxflow": {"load_workers": 4, "prefetch": 8}}, delay=0.05)

    def two_then_stop():
        gen = pipe.predict(big_pngs)
        first = [next(gen)["input_path"], next(gen)["input_path"]]
        gen.close()
        return first

    assert _finishes(two_then_stop, timeout=60) == big_pngs[:2]
    assert budget.in_flight == 0


def test_real_detector_under_a_small_budget(big_pngs, monkeypatch):
    require_shared()
    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(BUDGET))
    budget = _fresh_budget()
    config = {"SubModules": {"ObjectDetection": {"model_name": "PicoDet-XS", "model_dir": str(PICODET_ONNX)}}}
    pipe = create_pipeline("object_detection", config=config, load_workers=4, prefetch=8, infer_workers=2)
    results = _finishes(lambda: [(r["input_path"], r.ok) for r in pipe.predict(big_pngs[:5], threshold=0.5)])
    assert results == [(p, True) for p in big_pngs[:5]]
    assert 0 < budget.peak <= BUDGET and budget.in_flight == 0


# ---------------------------------------------------------------- the per-image limit

def test_our_pixel_limit_applies_above_pillows(monkeypatch, tmp_path):
    data = header_only_png(20000, 10000)  # 200 M pixels: Pillow's own check would refuse it (> 2 x 89.5 M)
    before = Image.MAX_IMAGE_PIXELS
    assert 20000 * 10000 > 2 * before
    header = probe_header(data)
    assert (header.format, header.width, header.height) == ("PNG", 20000, 10000)
    monkeypatch.setenv("PXFLOW_MAX_IMAGE_PIXELS", "300000000")
    with pytest.raises(InputError) as passed:
        decode_image(data)  # passes the header check, then there are no pixels to decode
    assert passed.value.error_type == "decode_failed"
    monkeypatch.setenv("PXFLOW_MAX_IMAGE_PIXELS", "150000000")  # read at the call, not at import
    with pytest.raises(InputError) as refused:
        decode_image(data)
    assert refused.value.error_type == "too_large" and "150000000" in refused.value.message
    assert Image.MAX_IMAGE_PIXELS == before  # Pillow's global was left alone

    path = tmp_path / "huge.png"
    path.write_bytes(data)
    pipe = CornerColour({})
    assert next(pipe.predict(str(path))).data["error"]["type"] == "too_large"
    monkeypatch.setenv("PXFLOW_MAX_IMAGE_PIXELS", "300000000")
    assert next(pipe.predict(str(path))).data["error"]["type"] == "decode_failed"


def test_the_default_limit_is_200m_pixels(monkeypatch):
    monkeypatch.delenv("PXFLOW_MAX_IMAGE_PIXELS", raising=False)
    with pytest.raises(InputError) as at_limit:
        decode_image(header_only_png(20000, 10000))
    assert at_limit.value.error_type == "decode_failed"  # exactly 200 M is allowed
    with pytest.raises(InputError) as above:
        decode_image(header_only_png(20000, 10001))
    assert above.value.error_type == "too_large"


def test_an_image_above_pillows_limit_really_decodes(monkeypatch):
    width, height = 13500, 13400  # 180.9 M pixels, above Pillow's 178.9 M error threshold
    monkeypatch.setenv("PXFLOW_MAX_IMAGE_PIXELS", "300000000")
    image = decode_image(solid_png(width, height, (1, 2, 3)))
    assert image.shape == (height, width, 3)
    assert image[0, 0].tolist() == [3, 2, 1] and image[-1, -1].tolist() == [3, 2, 1]


# ---------------------------------------------------------------- thresholds

@pytest.mark.parametrize(
    "value, problem",
    [
        ({"a": 1}, r"keys are class ids.*'a'"),
        (-1, r"threshold must be in \[0, 1\], got -1"),
        (5, r"threshold must be in \[0, 1\], got 5"),
        ("abc", r"threshold must be a number in \[0, 1\], got 'abc'"),
        ({0: 2}, r"threshold for class 0 must be in \[0, 1\], got 2"),
        ({"-1": 0.5}, r"keys are class ids"),
        (float("nan"), r"must be in \[0, 1\]"),
        (True, r"must be a number"),
        ([0.5], r"must be a number"),
    ],
)
def test_bad_thresholds_are_value_errors_naming_the_problem(value, problem):
    with pytest.raises(ValueError, match=problem):
        parse_threshold(value)


def test_good_thresholds_still_parse():
    assert parse_threshold(0) == 0.0 and parse_threshold(1) == 1.0
    assert parse_threshold({"3": "0.25", 1: 0.5, 2.0: 1}) == {3: 0.25, 1: 0.5, 2: 1.0}
    assert parse_threshold(np.float32(0.5)) == 0.5


def test_predict_rejects_a_bad_threshold_before_reading_any_input():
    require_shared()
    config = {"SubModules": {"ObjectDetection": {"model_name": "PicoDet-XS", "model_dir": str(PICODET_ONNX)}}}
    pipe = create_pipeline("object_detection", config=config)
    read: list[int] = []

    def inputs():
        read.append(1)
        yield np.zeros((8, 8, 3), np.uint8)

    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 5"):
        next(pipe.predict(inputs(), threshold=5))
    assert read == []


# ---------------------------------------------------------------- admission outside predict() (pxflow serve)

def test_admit_waits_a_bounded_time_and_holds_nothing_when_refused(monkeypatch):
    from pxflow.pipelines.prefetch import BudgetTimeout, admit

    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(BUDGET))
    budget = _fresh_budget()
    first = admit(PIXELS * 2, BUDGET)  # 72 M of 100 M
    try:
        assert budget.in_flight == PIXELS * 2
        started = time.monotonic()
        with pytest.raises(BudgetTimeout):
            admit(PIXELS, BUDGET, timeout=0.3)  # 108 M would not fit: refused, not queued without end
        assert time.monotonic() - started < 5
        assert budget.in_flight == PIXELS * 2 and budget.overflows == 0  # the refused one holds nothing
        second = admit(BUDGET - PIXELS * 2, BUDGET)  # what is left fits
        second.close()
    finally:
        first.close()
    assert budget.in_flight == 0
    admit(PIXELS, BUDGET).close()  # room again once given back


def test_predict_does_not_count_admitted_arrays_twice(monkeypatch):
    """The server holds a request's pixels and hands predict() the decoded arrays: counting them again
    would wait for the server's own pixels (the budget is full of them) until the request times out."""
    from pxflow.pipelines.prefetch import admit

    monkeypatch.setenv("PXFLOW_MAX_PIXELS_IN_FLIGHT", str(BUDGET))
    budget = _fresh_budget()
    arrays = [np.full((600, 600, 3), i, np.uint8) for i in range(3)]
    held = admit(BUDGET, BUDGET)  # the whole budget, as admitted requests would hold it
    try:
        pipe = CornerColour({"Pxflow": {"load_workers": 2, "prefetch": 4}}, delay=0.01)
        got = _finishes(lambda: [r["bgr"] for r in pipe.predict(arrays, admitted=True)], timeout=30)
        assert got == [[i, i, i] for i in range(3)]
        assert budget.in_flight == BUDGET and budget.overflows == 0  # nothing counted beyond the admission
    finally:
        held.close()
    assert budget.in_flight == 0
