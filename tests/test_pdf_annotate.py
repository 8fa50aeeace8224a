"""PDFs in bulk runs (issue 19 item 4): a folder, prefix or manifest holding a PDF gives one ``images`` row per page.

A PDF is one input of the plan (one listing entry, one content tag) whose rows are one per page, all under
the PDF's identity with ``page_index`` set; its ``objects`` rows carry the page too. Planning and the shard
commit key on the PDF's identity, so a rerun skips it and ``--force`` replaces all its pages' rows at once.
The PDF is made here from two real COCO pictures (Pillow writes PDFs), so every page has objects to find.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from pxflow.flows.cli import main as cli_main
from pxflow.pipelines.io import storage
from tests.conftest import COCO_MINI, PICODET_ONNX
from tests.support.annotate_helpers import read_table

#: two pictures with several large people in them (coco_val_mini ground truth), so each page has detections
PAGES = ("000000350679.jpg", "000000183709.jpg")
PLAIN = ("000000000139.jpg", "000000000802.jpg")
#: pypdfium2 renders a page at 2 x 72 dpi (pipelines.io.inputs.PDF_RENDER_SCALE); Pillow writes one pixel per point
RENDER_SCALE = 2


def _two_page_pdf(path: Path) -> list[tuple[int, int]]:
    """A PDF whose pages are the :data:`PAGES` pictures; returns each page's rendered (width, height)."""
    first, second = (Image.open(COCO_MINI / "images" / name).convert("RGB") for name in PAGES)
    first.save(path, "PDF", resolution=72.0, save_all=True, append_images=[second])
    return [(image.width * RENDER_SCALE, image.height * RENDER_SCALE) for image in (first, second)]


def _folder(kind: str, s3_server, tmp_path: Path) -> tuple[str, str, str, list[tuple[int, int]]]:
    """(input location, output root, the PDF's identity, page sizes): two pictures and a two-page PDF."""
    local = tmp_path / "in"
    local.mkdir()
    for name in PLAIN:
        shutil.copy(COCO_MINI / "images" / name, local / name)
    sizes = _two_page_pdf(local / "scan.pdf")
    if kind == "local":
        return str(local), str(tmp_path / "out"), os.path.realpath(local / "scan.pdf"), sizes
    root = s3_server.unique_prefix("pdf-annotate")
    for path in sorted(local.iterdir()):
        storage.upload_file(str(path), f"{root}/in/{path.name}")
    return f"{root}/in", f"{root}/out", f"{root}/in/scan.pdf", sizes


def _last_run(output: str) -> dict:
    return max(read_table(f"{output}/runs").to_pylist(), key=lambda r: r["ended_at"])


def _check_rows(out: str, pdf: str, sizes: list[tuple[int, int]]) -> tuple[list[dict], list[dict]]:
    images = read_table(f"{out}/images").to_pylist()
    objects = read_table(f"{out}/objects").to_pylist()
    pages = sorted((r for r in images if r["image_uri"] == pdf), key=lambda r: r["page_index"])
    assert [(r["page_index"], r["status"]) for r in pages] == [(0, "ok"), (1, "ok")], pages
    assert [(r["width"], r["height"]) for r in pages] == sizes  # each row is its own page, not the first one twice
    assert pages[0]["etag"] and pages[0]["etag"] == pages[1]["etag"]  # one read of the PDF
    others = [r for r in images if r["image_uri"] != pdf]
    assert len(others) == len(PLAIN) and all(r["page_index"] is None and r["status"] == "ok" for r in others)
    per_page = Counter((r["image_uri"], r["page_index"]) for r in objects)
    assert all(per_page[(r["image_uri"], r["page_index"])] == r["num_objects"] for r in images)
    assert pages[0]["num_objects"] > 0 and pages[1]["num_objects"] > 0
    keys = [(r["image_uri"], r["page_index"], r["object_index"]) for r in objects]
    assert len(set(keys)) == len(keys)  # no duplicate object rows
    return images, objects


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_pdf_in_a_folder_is_one_row_per_page_reruns_skip_it_and_force_replaces_it(
    kind, s3_server, prefect_server, tmp_path, shared_dir
):
    src, out, pdf, sizes = _folder(kind, s3_server, tmp_path)
    argv = ["annotate", "--input", src, "--output", out, "--model-dir", str(PICODET_ONNX), "--threshold", "0.3",
            "--shard-size", "2", "--no-progress"]
    assert cli_main(argv) == 0
    images, objects = _check_rows(out, pdf, sizes)
    run = _last_run(out)
    assert (run["listed"], run["new"], run["images_inferred"], run["complete"]) == (3, 3, 4, True)
    assert "unsupported_format" not in run["error_types"]

    # a rerun: the PDF is unchanged like the pictures, nothing is inferred
    assert cli_main(argv) == 0
    again = _last_run(out)
    assert (again["unchanged"], again["images_inferred"], again["shards_planned"]) == (3, 0, 0)

    # --force re-infers every page and replaces the rows: still one row per page, no duplicate objects
    assert cli_main(argv + ["--force"]) == 0
    assert _last_run(out)["images_inferred"] == 4
    forced_images, forced_objects = _check_rows(out, pdf, sizes)
    assert len(forced_images) == len(images) == 4
    assert len(forced_objects) == len(objects)


@pytest.mark.slow
def test_a_pdf_named_by_a_manifest_is_its_pages_not_unsupported_format(prefect_server, tmp_path, shared_dir):
    sizes = _two_page_pdf(tmp_path / "scan.pdf")
    manifest = tmp_path / "inputs.txt"
    manifest.write_text("scan.pdf\n")
    out = tmp_path / "out"
    assert cli_main(["annotate", "--input", str(manifest), "--output", str(out), "--model-dir", str(PICODET_ONNX),
                     "--threshold", "0.3", "--no-progress"]) == 0
    rows = sorted(read_table(str(out / "images")).to_pylist(), key=lambda r: r["page_index"])
    assert [(r["image_uri"], r["page_index"], r["status"]) for r in rows] == [
        (os.path.realpath(tmp_path / "scan.pdf"), 0, "ok"), (os.path.realpath(tmp_path / "scan.pdf"), 1, "ok")]
    assert [(r["width"], r["height"]) for r in rows] == sizes


def test_planning_retries_a_pdf_when_any_one_of_its_pages_is_retryable(tmp_path):
    """Planning reads one (etag, retryable) per identity; a PDF has a row per page, and a transient failure of
    page 0 (an outage while it was read) must not be hidden by page 1's permanent row."""
    from pxflow.pipelines.io.storage import Storage
    from pxflow.pipelines.results.base import ErrorResult
    from pxflow.tasks.lake import Lake
    from pxflow.tasks.rows import RowBuilder

    lake = Lake(str(tmp_path / "out"), Storage())
    builder = RowBuilder("key", "object_detection", "m", "sha", "shard0")
    for page, transient in ((0, True), (1, False)):
        result = ErrorResult("/in/scan.pdf", "download_failed" if transient else "too_large", "page failed")
        result.data["page_index"] = page
        builder.add("/in/scan.pdf", result, {"etag": "e1", "transient": transient})
    lake.commit_shard("key", "shard0", None, ["/in/scan.pdf"], *builder.tables())
    assert read_table(str(tmp_path / "out" / "images")).num_rows == 2
    assert lake.annotated("key", None) == {"/in/scan.pdf": ("e1", True)}


def test_an_objects_table_written_before_page_index_takes_the_new_rows(tmp_path):
    """Tables made before ``objects.page_index`` existed: the next shard's commit adds the column (null in the
    old rows) instead of failing every shard on a schema mismatch after its inference."""
    import pyarrow as pa

    from pxflow.pipelines.io.storage import Storage
    from pxflow.pipelines.results.base import ErrorResult
    from pxflow.tasks.lake import Lake
    from pxflow.tasks.rows import OBJECTS_SCHEMA, RowBuilder

    lake = Lake(str(tmp_path / "out"), Storage())
    old_schema = pa.schema([f for f in OBJECTS_SCHEMA if f.name != "page_index"])
    row = {"run_key": "key", "pipeline": "object_detection", "image_uri": "/in/a.png", "shard_id": "s0",
           "object_index": 0, "label": "person"}
    lake.write("objects", pa.Table.from_pylist([row], schema=old_schema))
    builder = RowBuilder("key", "object_detection", "m", "sha", "s1")
    builder.add("/in/scan.pdf", ErrorResult("/in/scan.pdf", "too_large", "x"), {"etag": "e"})
    _, images = builder.tables()
    page_row = {**row, "image_uri": "/in/scan.pdf", "shard_id": "s1", "page_index": 1}
    lake.commit_shard("key", "s1", None, ["/in/scan.pdf"], pa.Table.from_pylist([page_row], schema=OBJECTS_SCHEMA),
                      images)
    objects = sorted(read_table(str(tmp_path / "out" / "objects")).to_pylist(), key=lambda r: r["image_uri"])
    assert [(r["image_uri"], r["page_index"]) for r in objects] == [("/in/a.png", None), ("/in/scan.pdf", 1)]
