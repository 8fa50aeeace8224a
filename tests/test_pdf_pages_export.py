"""A PDF's pages stay separate images in COCO exports, evaluation and the review round trip.

`annotate` gives every page of a PDF its own `images` row, all under the PDF's `image_uri` with `page_index`
set; the exports name a page `scan.pdf#page=N` (RFC 8118, 1-based) and must give it exactly its own boxes.
The run is real: a two-page PDF made from two coco_val_mini pictures (pages with different numbers of
objects) and one ordinary picture, annotated by `pxflow annotate` with PicoDet-XS (ONNX). Expected boxes are
the `objects` rows, read with deltalake, per `(image_uri, page_index)`.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections import defaultdict

import pytest

from pxflow.flows.cli import main as cli_main
from tests.conftest import COCO_MINI, PICODET_ONNX
from tests.test_export_eval import GT, last_json, table_rows
from tests.test_pdf_annotate import _two_page_pdf

PLAIN = "000000000139.jpg"
PAGE_NAMES = {0: "scan.pdf#page=1", 1: "scan.pdf#page=2"}


@pytest.fixture(scope="module")
def pdf_run(tmp_path_factory, shared_dir) -> dict:
    """A real annotate output of a folder holding a two-page PDF and one picture (inline, no Prefect server)."""
    root = tmp_path_factory.mktemp("pdf_pages")
    src = root / "in"
    src.mkdir()
    shutil.copy(COCO_MINI / "images" / PLAIN, src / PLAIN)
    _two_page_pdf(src / "scan.pdf")
    out = str(root / "out")
    assert cli_main(["annotate", "--input", str(src), "--output", out, "--model-dir", str(PICODET_ONNX),
                     "--threshold", "0.3", "--no-progress"]) == 0
    pdf = os.path.realpath(src / "scan.pdf")
    by_page: dict[tuple, list[dict]] = defaultdict(list)
    for row in sorted(table_rows(out, "objects"), key=lambda r: r["object_index"]):
        by_page[(row["image_uri"], row["page_index"])].append(row)
    plain = os.path.realpath(src / PLAIN)
    counts = [len(by_page[(pdf, 0)]), len(by_page[(pdf, 1)])]
    # the test means something only if the pages differ and each has boxes
    assert counts[0] > 0 and counts[1] > 0 and counts[0] != counts[1], counts
    assert by_page[(plain, None)]
    return {"out": out, "pdf": pdf, "plain": plain, "by_page": dict(by_page), "root": root}


def _name_key(run: dict) -> dict[str, tuple]:
    """The export name of each image -> its ``(image_uri, page_index)``."""
    return {PAGE_NAMES[0]: (run["pdf"], 0), PAGE_NAMES[1]: (run["pdf"], 1), PLAIN: (run["plain"], None)}


def _row_boxes(rows: list[dict]) -> list[tuple]:
    return sorted((r["label"], round(r["x1"], 2), round(r["y1"], 2), round(r["x2"], 2), round(r["y2"], 2)) for r in rows)


def _close(found: list[tuple], rows: list[dict], tol: float = 0.02) -> None:
    """``found`` ``(label, x1, y1, x2, y2)`` are the rows' boxes, one for one."""
    expected = _row_boxes(rows)
    assert len(found) == len(expected), (found, expected)
    for got, want in zip(sorted(found), expected):
        assert got[0] == want[0] and all(abs(a - b) <= tol for a, b in zip(got[1:], want[1:])), (got, want)


def test_coco_export_has_one_image_per_page_with_its_own_boxes(pdf_run, tmp_path, capsys):
    out = tmp_path / "dataset.json"
    assert cli_main(["export", "coco", "--output", pdf_run["out"], "--out", str(out), "--format", "dataset"]) == 0
    dataset = json.loads(out.read_text())
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    images = {i["id"]: i for i in dataset["images"]}
    assert sorted(i["file_name"] for i in images.values()) == sorted(_name_key(pdf_run))
    assert len(images) == 3
    per_image: dict[str, list[tuple]] = defaultdict(list)
    for ann in dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        per_image[images[ann["image_id"]]["file_name"]].append((names[ann["category_id"]], x, y, x + w, y + h))
    for name, key in _name_key(pdf_run).items():
        _close(per_image[name], pdf_run["by_page"][key])

    # the results file of the same run uses the dataset's ids: each page's detections are its own
    results = tmp_path / "results.json"
    assert cli_main(["export", "coco", "--output", pdf_run["out"], "--out", str(results)]) == 0
    per_id: dict[int, list[tuple]] = defaultdict(list)
    for det in json.loads(results.read_text()):
        x, y, w, h = det["bbox"]
        per_id[det["image_id"]].append((names[det["category_id"]], x, y, x + w, y + h))
    assert set(per_id) == set(images)
    for image_id, found in per_id.items():
        _close(found, pdf_run["by_page"][_name_key(pdf_run)[images[image_id]["file_name"]]])

    # the dataset imported back as ground truth (CVAT's COCO 1.0 round trip): `#page=N` is the page again
    capsys.readouterr()
    assert cli_main(["import-gt", "--from", "coco", str(out), "--output", pdf_run["out"], "--source", "coco-pages"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["images_with_uri"] == 3
    gt = _gt_by_page(pdf_run["out"], summary["import_id"])
    assert set(gt) == set(_name_key(pdf_run).values())
    for key, rows in gt.items():
        _close([(r["label"], r["x1"], r["y1"], r["x2"], r["y2"]) for r in rows], pdf_run["by_page"][key])


def _percent_box(result: dict) -> tuple:
    w, h, v = result["original_width"], result["original_height"], result["value"]
    return (v["rectanglelabels"][0], v["x"] * w / 100, v["y"] * h / 100, (v["x"] + v["width"]) * w / 100,
            (v["y"] + v["height"]) * h / 100)


def _gt_by_page(output: str, import_id: str) -> dict[tuple, list[dict]]:
    found: dict[tuple, list[dict]] = defaultdict(list)
    for row in table_rows(output, "ground_truth"):
        if row["import_id"] == import_id:
            found[(row["image_uri"], row["page_index"])].append({**row, "label": row["category"]})
    return dict(found)


def test_label_studio_round_trip_keeps_each_box_on_its_page(pdf_run, tmp_path, capsys):
    out = tmp_path / "tasks.json"
    assert cli_main(["export", "label-studio", "--output", pdf_run["out"], "--out", str(out),
                     "--image-root", str(pdf_run["root"] / "in")]) == 0
    tasks = json.loads(out.read_text())
    assert len(tasks) == 3
    by_ref = {t["data"]["image"]: t for t in tasks}
    assert set(by_ref) == {"/data/local-files/?d=" + n for n in _name_key(pdf_run)}
    for name, key in _name_key(pdf_run).items():
        task = by_ref["/data/local-files/?d=" + name]
        assert (task["data"]["pxflow_image_uri"], task["data"].get("pxflow_page_index")) == key
        boxes = [_percent_box(r) for r in task["predictions"][0]["result"] if r["type"] == "rectanglelabels"]
        _close(boxes, pdf_run["by_page"][key])
        task["annotations"] = [{"result": task["predictions"][0]["result"]}]  # reviewed: accepted as predicted
    reviewed = tmp_path / "ls_export.json"
    reviewed.write_text(json.dumps(tasks))
    capsys.readouterr()
    assert cli_main(["import-gt", "--from", "label-studio", str(reviewed), "--output", pdf_run["out"],
                     "--source", "ls-pages"]) == 0
    summary = last_json(capsys.readouterr().out)
    gt = _gt_by_page(pdf_run["out"], summary["import_id"])
    assert set(gt) == set(_name_key(pdf_run).values())
    for key, rows in gt.items():
        _close([(r["label"], r["x1"], r["y1"], r["x2"], r["y2"]) for r in rows], pdf_run["by_page"][key])


def test_cvat_round_trip_keeps_each_box_on_its_page_and_scores_per_page(pdf_run, tmp_path, capsys):
    out = tmp_path / "annotations.xml"
    assert cli_main(["export", "cvat", "--output", pdf_run["out"], "--out", str(out)]) == 0
    images = {e.attrib["name"]: e for e in ET.parse(out).getroot().findall("image")}
    assert set(images) == set(_name_key(pdf_run))
    for name, key in _name_key(pdf_run).items():
        boxes = [(b.attrib["label"], *(float(b.attrib[k]) for k in ("xtl", "ytl", "xbr", "ybr")))
                 for b in images[name].findall("box")]
        _close(boxes, pdf_run["by_page"][key])
    capsys.readouterr()
    assert cli_main(["import-gt", "--from", "cvat", str(out), "--output", pdf_run["out"], "--source", "cvat-pages"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["images"] == 3 and summary["resolved_by_name"] == 3  # CVAT knows names only
    gt = _gt_by_page(pdf_run["out"], summary["import_id"])
    assert set(gt) == set(_name_key(pdf_run).values())
    for key, rows in gt.items():
        _close([(r["label"], r["x1"], r["y1"], r["x2"], r["y2"]) for r in rows], pdf_run["by_page"][key])

    # the run scored against its own boxes, page by page: a perfect score over all three images
    assert cli_main(["eval", "--output", pdf_run["out"], "--gt", "lake", "--gt-source", "cvat-pages"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["images"] == 3 and result["AP"] == pytest.approx(1.0), result


def _gt_file(path, pages: dict[str, list[dict]], coco_categories: list[dict]) -> str:
    """A COCO ground truth naming the pages ``scan.pdf#page=N``, with the given rows as annotations."""
    categories = sorted(c["id"] for c in coco_categories)
    images, annotations = [], []
    for number, (name, rows) in enumerate(sorted(pages.items()), 1):
        images.append({"id": number, "file_name": name, "width": 2000, "height": 2000})
        for row in rows:
            x1, y1, x2, y2 = row["x1"], row["y1"], row["x2"], row["y2"]
            annotations.append({"id": len(annotations) + 1, "image_id": number, "iscrowd": 0,
                                "category_id": categories[row["cls_id"]], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1)})
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": coco_categories}))
    return str(path)


def test_eval_against_a_page_ground_truth_matches_each_page_to_its_own_boxes(pdf_run, tmp_path, capsys):
    categories = json.loads(GT.read_text())["categories"]
    page1, page2 = pdf_run["by_page"][(pdf_run["pdf"], 0)], pdf_run["by_page"][(pdf_run["pdf"], 1)]
    own = _gt_file(tmp_path / "own.json", {PAGE_NAMES[0]: page1, PAGE_NAMES[1]: page2}, categories)
    capsys.readouterr()
    assert cli_main(["eval", "--output", pdf_run["out"], "--gt", own]) == 0
    result = last_json(capsys.readouterr().out)
    assert (result["images"], result["images_not_in_gt"]) == (2, 1)  # the two pages; the picture is not in the GT
    assert result["detections"] == len(page1) + len(page2)
    assert result["AP"] == pytest.approx(1.0), result

    swapped = _gt_file(tmp_path / "swapped.json", {PAGE_NAMES[0]: page2, PAGE_NAMES[1]: page1}, categories)
    assert cli_main(["eval", "--output", pdf_run["out"], "--gt", swapped]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["images"] == 2 and result["AP"] < 0.8, result

    # a ground truth naming the PDF without a page matches no page (never all pages onto one id)
    plain = _gt_file(tmp_path / "plain.json", {"scan.pdf": page1 + page2}, categories)
    assert cli_main(["eval", "--output", pdf_run["out"], "--gt", plain]) == 0
    result = last_json(capsys.readouterr().out)
    assert (result["images"], result["images_not_in_gt"]) == (0, 3), result


def test_page_names_are_the_pdf_page_fragment_and_read_back():
    from pxflow.pipelines.io.pages import page_name, split_page

    assert page_name("docs/scan.pdf", 0) == "docs/scan.pdf#page=1" and page_name("a.jpg", None) == "a.jpg"
    assert split_page("docs/scan.pdf#page=12") == ("docs/scan.pdf", 11)
    for plain in ("a.jpg", "a#page=x.jpg", "scan.pdf#page=0", "#page=3", "a.jpg#frag"):
        assert split_page(plain) == (plain, None)


def test_a_ground_truth_table_older_than_page_index_takes_a_page_import(tmp_path):
    """An output whose ``ground_truth`` was written before the ``page_index`` column: the next import adds the
    column (old rows read null) instead of failing on a schema mismatch."""

    from pxflow.pipelines.formats.review import ReviewImage, ReviewObject
    from pxflow.pipelines.io.storage import Storage
    from pxflow.tasks.ground_truth import GROUND_TRUTH_SCHEMA, ground_truth_rows, write_import
    from pxflow.tasks.lake import Lake

    lake = Lake(str(tmp_path / "out"), Storage())
    old = ground_truth_rows([ReviewImage(name="a.jpg", width=4, height=4, uri="/in/a.jpg")], source="old",
                            source_format="cvat", source_file="old.xml", source_version="0")
    lake.write("ground_truth", old.drop_columns(["page_index"]))
    page = ReviewImage(name="scan.pdf#page=2", width=4, height=4, uri="/in/scan.pdf", page_index=1,
                       objects=[ReviewObject(label="cat", box=[0.0, 0.0, 2.0, 2.0])])
    write_import(lake, ground_truth_rows([page], source="new", source_format="cvat", source_file="new.xml",
                                         source_version="1"))
    rows = sorted(table_rows(str(tmp_path / "out"), "ground_truth"), key=lambda r: r["source"])
    assert [(r["source"], r["image_uri"], r["page_index"]) for r in rows] == [
        ("new", "/in/scan.pdf", 1), ("old", "/in/a.jpg", None)]
    assert "page_index" in GROUND_TRUTH_SCHEMA.names
