"""``iter_inputs`` / ``iter_entries``: the one expansion path for predict() and the batch flows."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pxflow.pipelines.io import storage
from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.inputs import InputEntry, InputItem, iter_entries, iter_inputs
from pxflow.pipelines.io.manifest import iter_input_uris
from pxflow.pipelines.io.storage import ObjectInfo, Storage

AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")


def png(h: int = 12, w: int = 16, bgr=(10, 200, 30)) -> bytes:
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = bgr
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def load_error(item: InputItem) -> InputError:
    with pytest.raises(InputError) as raised:
        item.load()
    return raised.value


# ---------------------------------------------------------------- manifests

def test_csv_manifest_items_carry_their_extra_columns_as_options(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png())
    manifest = tmp_path / "m.csv"
    manifest.write_text('uri,prompt,prompt_type\nimgs/a.png,"[[1, 2, 30, 40]]",box\nimgs/b.png,,\n')
    items = list(iter_inputs(str(manifest)))
    assert [i.uri for i in items] == [str(tmp_path / "imgs" / "a.png"), str(tmp_path / "imgs" / "b.png")]
    assert items[0].options == {"prompt": "[[1, 2, 30, 40]]", "prompt_type": "box"}
    assert items[1].options is None  # empty cells are not options
    assert items[0].load().shape == (12, 16, 3)
    assert load_error(items[1]).error_type == "not_found"

    entries = list(iter_entries(str(manifest)))
    assert entries == [
        InputEntry(str(tmp_path / "imgs" / "a.png"), None, {"prompt": "[[1, 2, 30, 40]]", "prompt_type": "box"}),
        InputEntry(str(tmp_path / "imgs" / "b.png"), None, {}),
    ]


def test_parquet_manifest_on_s3_and_a_listing_with_etags(s3_server):
    root = s3_server.unique_prefix("inputs-manifest")
    storage.write_bytes(f"{root}/imgs/a.png", png())
    storage.write_bytes(f"{root}/imgs/b.png", png(bgr=(1, 2, 3)))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": [7, 8], "image_uri": ["imgs/a.png", "s3://elsewhere/c.png"],
                             "prompt": ["cat", None]}), sink)
    storage.write_bytes(f"{root}/m.parquet", sink.getvalue().to_pybytes())

    entries = list(iter_entries(f"{root}/m.parquet"))
    assert entries == [InputEntry(f"{root}/imgs/a.png", None, {"id": 7, "prompt": "cat"}),
                       InputEntry("s3://elsewhere/c.png", None, {"id": 8})]
    items = list(iter_inputs(f"{root}/m.parquet"))
    assert [(i.uri, i.options) for i in items] == [(f"{root}/imgs/a.png", {"id": 7, "prompt": "cat"}),
                                                  ("s3://elsewhere/c.png", {"id": 8})]

    listed = list(iter_entries(f"{root}/imgs"))
    import hashlib

    assert listed == [
        InputEntry(f"{root}/imgs/a.png", ObjectInfo(f"{root}/imgs/a.png", len(png()), hashlib.md5(png()).hexdigest())),
        InputEntry(f"{root}/imgs/b.png",
                   ObjectInfo(f"{root}/imgs/b.png", len(png(bgr=(1, 2, 3))), hashlib.md5(png(bgr=(1, 2, 3))).hexdigest())),
    ]
    assert listed[0].etag == hashlib.md5(png()).hexdigest() and listed[0].size == len(png())
    assert list(iter_input_uris(f"{root}/imgs")) == [f"{root}/imgs/a.png", f"{root}/imgs/b.png"]


# ---------------------------------------------------------------- dict input, storage, empty locations

def test_paddlex_dict_input(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png())
    (item,) = iter_inputs({"img": str(path)})
    assert item.uri == str(path) and item.options is None and item.load().shape == (12, 16, 3)
    (with_prompt,) = iter_inputs([{"img": path, "prompt": [[0, 0, 5, 5]]}])
    assert with_prompt.uri == str(path) and with_prompt.options == {"prompt": [[0, 0, 5, 5]]}
    array = np.full((4, 5, 3), 7, np.uint8)
    (from_array,) = iter_inputs({"input": array})
    assert from_array.uri is None and from_array.load().shape == (4, 5, 3)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x.jpg").write_bytes(b"x")
    (tmp_path / "dir" / "y.png").write_bytes(b"y")
    assert [(i.uri, i.options) for i in iter_inputs({"img": str(tmp_path / "dir"), "threshold": 0.5})] == [
        (str(tmp_path / "dir" / "x.jpg"), {"threshold": 0.5}),
        (str(tmp_path / "dir" / "y.png"), {"threshold": 0.5}),
    ]
    with pytest.raises(TypeError, match="img"):
        list(iter_inputs({"image": str(path)}))


def test_a_location_that_lists_nothing_is_one_not_found_item(tmp_path, s3_server):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    for location in (str(tmp_path / "empty"), s3_server.unique_prefix("nothing-here") + "/"):
        assert list(iter_entries(location)) == []  # a listing: nothing, no error
        (item,) = iter_inputs(location)
        assert item.uri == location
        error = load_error(item)
        assert error.error_type == "not_found" and error.uri == location
        assert item.meta["transient"] is False
    (missing,) = iter_inputs(str(tmp_path / "nope.jpg"))
    assert load_error(missing).error_type == "not_found"


def test_predict_yields_one_not_found_result_for_an_empty_location(tmp_path):
    from pxflow.pipelines.base import BasePipeline
    from pxflow.pipelines.results import ErrorResult

    class Shapes(BasePipeline):
        batch_size = 2

        def run_batch(self, batch, **kwargs):
            return [ErrorResult(p.item.uri, "inference_failed", str(p.image.shape), p.index) for p in batch]

    (tmp_path / "empty").mkdir()
    (result,) = list(Shapes({}).predict(str(tmp_path / "empty")))
    assert not result.ok and result.error_type == "not_found" and result.input_path == str(tmp_path / "empty")


def test_items_read_through_the_storage_they_were_given(s3_server, monkeypatch):
    root = s3_server.unique_prefix("inputs-storage")
    storage.write_bytes(f"{root}/a.png", png())
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    explicit = Storage(s3={"endpoint_url": s3_server.endpoint, "region": "us-east-1",
                           "access_key_id": s3_server.access_key, "secret_access_key": s3_server.secret_key})
    (item,) = iter_inputs(root, storage=explicit)  # a prefix: listed through the explicit storage
    assert item.uri == f"{root}/a.png" and item.storage is explicit
    assert item.load().shape == (12, 16, 3)
    assert item.meta["size_bytes"] == len(png())


def test_unknown_scheme_is_an_unsupported_format_item():
    (item,) = iter_inputs("gs://bucket/a.jpg")
    error = load_error(item)
    assert error.error_type == "unsupported_format" and "gs://bucket/a.jpg" in error.message and "s3://" in error.message
    manifest_entry = InputItem("s3a://b/k.jpg")  # as a batch shard would build it from a manifest entry
    assert load_error(manifest_entry).error_type == "unsupported_format"


# ---------------------------------------------------------------- load() meta

def test_load_fills_meta_with_what_the_read_saw(tmp_path, s3_server):
    path = tmp_path / "a.png"
    path.write_bytes(png())
    st = os.stat(path)
    item = InputItem(str(path))
    assert item.load().shape == (12, 16, 3)
    assert item.meta["etag"] == f"{st.st_mtime_ns:x}-{st.st_size:x}"
    assert item.meta["size_bytes"] == len(png())
    assert item.meta["download_ms"] >= 0 and item.meta["decode_ms"] >= 0
    assert "transient" not in item.meta

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    broken = InputItem(str(bad))
    assert load_error(broken).error_type == "unsupported_format"
    assert broken.meta["size_bytes"] == 16 and broken.meta["transient"] is False

    from tests.support.s3_server import free_port

    down = Storage(s3={"endpoint_url": f"http://127.0.0.1:{free_port()}"}, s3_max_attempts=1, s3_read_attempts=1)
    unreachable = InputItem("s3://pxflow-test/a.png", storage=down)
    error = load_error(unreachable)
    assert error.error_type == "download_failed" and unreachable.meta["transient"] is True


def test_items_stay_hashable_and_meta_is_not_part_of_equality():
    a, b = InputItem("s3://b/a.jpg"), InputItem("s3://b/a.jpg")
    b.meta["etag"] = "x"
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert InputItem("s3://b/a.jpg", options={"prompt": "cat"}) != a
    assert hash(InputItem("s3://b/a.jpg", options={"prompt": "cat"})) == hash(a)
    assert InputItem("x.pdf", page_index=0) != InputItem("x.pdf", page_index=1)
    with pytest.raises(Exception):
        a.uri = "other"  # frozen


# ---------------------------------------------------------------- local listing robustness, through iter_inputs

def test_directory_inputs_survive_symlink_loops_and_dangling_links(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(png())
    (root / "sub" / "b.png").write_bytes(png())
    (root / "sub" / "up").symlink_to(root)
    (root / "gone.png").symlink_to(tmp_path / "gone.png")
    items = list(iter_inputs(str(root)))  # the loop is walked once; the dangling link is an input that fails
    assert [i.uri for i in items] == [str(root / "a.png"), str(root / "gone.png"), str(root / "sub" / "b.png")]
    with pytest.raises(InputError, match="dangling symbolic link") as err:
        items[1].load()
    assert err.value.error_type == "not_found"


# ---------------------------------------------------------------- PDF

def color(pixel) -> tuple[int, ...]:
    """A pixel rounded to the nearest multiple of 8 (Pillow stores PDF pages as JPEG: off by a unit or two)."""
    return tuple(int(round(int(c) / 8) * 8) for c in pixel)


def two_page_pdf(path) -> None:
    from PIL import Image

    red = Image.new("RGB", (40, 30), (255, 0, 0))
    blue = Image.new("RGB", (40, 30), (0, 0, 255))
    red.save(path, "PDF", resolution=72.0, save_all=True, append_images=[blue])


def test_a_pdf_is_one_item_per_page(tmp_path, s3_server):
    pytest.importorskip("pypdfium2")
    pdf = tmp_path / "doc.pdf"
    two_page_pdf(pdf)
    items = list(iter_inputs(str(pdf)))
    assert [(i.uri, i.page_index) for i in items] == [(str(pdf), 0), (str(pdf), 1)]
    first, second = items[0].load(), items[1].load()
    assert first.shape == second.shape == (60, 80, 3)  # 40x30 pt at PaddleX's 2x render scale
    assert color(first[30, 40]) == (0, 0, 256)  # BGR red
    assert color(second[30, 40]) == (256, 0, 0)  # BGR blue
    assert items[1].meta["size_bytes"] == os.path.getsize(pdf) and items[1].meta["decode_ms"] >= 0

    uri = s3_server.unique_prefix("pdf") + "/doc.PDF"
    storage.write_bytes(uri, pdf.read_bytes())
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{uri}\n")
    remote = list(iter_inputs(str(manifest)))
    assert [(i.uri, i.page_index) for i in remote] == [(uri, 0), (uri, 1)]
    assert color(remote[1].load()[10, 10]) == (256, 0, 0)
    # a page item built on its own (as a batch shard would) reads the document itself
    alone = InputItem(uri, page_index=1)
    assert color(alone.load()[10, 10]) == (256, 0, 0) and alone.meta["size_bytes"] == os.path.getsize(pdf)

    corrupt = tmp_path / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.4 this is not really a pdf")
    (bad,) = iter_inputs(str(corrupt))
    assert load_error(bad).error_type == "decode_failed"
    (absent,) = iter_inputs(str(tmp_path / "absent.pdf"))
    assert load_error(absent).error_type == "not_found"


def test_a_pdf_without_pypdfium2_is_one_unsupported_format_error(tmp_path, monkeypatch):
    pdf = tmp_path / "doc.pdf"
    two_page_pdf(pdf)
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # as if it were not installed
    (item,) = iter_inputs(str(pdf))
    error = load_error(item)
    assert error.error_type == "unsupported_format" and "pypdfium2" in error.message
