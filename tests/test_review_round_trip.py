"""The review round trip on a real instance-segmentation run (YOLOv8n-seg on coco_val_mini; test data only).

Exports are read back by the tools' own code where it installs (``label_studio_converter.brush``,
pycocotools); CVAT does not install beside pxflow (datumaro pins older pyarrow/opencv/Pillow), so its mask
RLE is decoded here as CVAT's ``MaskConverter.cvat_rle_to_dm_rle`` does it (counts as a COCO RLE of size
``[w, h]``, transposed), independently of pxflow's decoder. Expected boxes and masks are the table's rows,
read with deltalake; expected AP is pycocotools' on the shared ground-truth file.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pxflow.flows.cli import main as cli_main
from tests.conftest import COCO_MINI, SHARED
from tests.test_export_eval import GT, annotate_into, coco_uris, last_json, pxflow, table_rows
from tests.support.masks import iou

YOLO_SEG = SHARED / "models" / "YOLOv8n-seg_int8_320_coco"


@pytest.fixture(scope="module")
def seg_output(tmp_path_factory, shared_dir) -> str:
    """A real instance-segmentation run: YOLOv8n-seg on 6 COCO images (boxes and masks)."""
    out = str(tmp_path_factory.mktemp("seg") / "out")
    annotate_into(out, coco_uris(6), threshold=0.25, pipeline="instance_segmentation", model_dir=YOLO_SEG,
                  submodule="InstanceSegmentation")
    return out


def row_mask(row: dict) -> np.ndarray:
    return mask_utils.decode({"size": [row["mask_height"], row["mask_width"]], "counts": row["mask_counts"].encode()}) > 0



def box_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def rows_by_image(output: str) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for row in sorted(table_rows(output, "objects"), key=lambda r: r["object_index"]):
        by.setdefault(os.path.basename(row["image_uri"]), []).append(row)
    return by


def assert_same_objects(found: list[tuple[str, list[float], np.ndarray | None]], rows: list[dict]) -> None:
    """Each row has exactly one found object with its label, box IoU >= 0.99 and mask IoU >= 0.99."""
    assert len(found) == len(rows)
    unmatched = list(found)
    for row in rows:
        box = [row["x1"], row["y1"], row["x2"], row["y2"]]
        best = max(unmatched, key=lambda f: (f[0] == row["label"], box_iou(f[1], box)))
        assert best[0] == row["label"] and box_iou(best[1], box) >= 0.99, (best[:2], box)
        assert best[2] is not None and iou(best[2], row_mask(row)) >= 0.99
        unmatched.remove(best)


# --------------------------------------------------------------------------- Label Studio

def test_label_studio_export_decodes_with_label_studios_converter(seg_output, tmp_path):
    from label_studio_converter import brush

    out = tmp_path / "tasks.json"
    assert cli_main(["export", "label-studio", "--output", seg_output, "--out", str(out),
                     "--image-root", str(COCO_MINI)]) == 0
    tasks = json.loads(out.read_text())
    by_image = rows_by_image(seg_output)
    assert len(tasks) == 6 and sum(len(v) for v in by_image.values()) > 6
    for task in tasks:
        name = os.path.basename(task["data"]["image"])
        assert task["data"]["image"] == f"/data/local-files/?d=images/{name}"
        results = task["predictions"][0]["result"]
        boxes = {r["id"]: r for r in results if r["type"] == "rectanglelabels"}
        found = []
        for result in results:
            if result["type"] != "brushlabels":
                continue
            w, h = result["original_width"], result["original_height"]
            assert result["value"]["format"] == "rle"
            # Label Studio's own decoder: RGBA bytes, the alpha channel is the brush
            mask = brush.decode_rle(result["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0
            rect = boxes[result["id"][: -len("-mask")]]["value"]
            box = [rect["x"] * w / 100, rect["y"] * h / 100, (rect["x"] + rect["width"]) * w / 100,
                   (rect["y"] + rect["height"]) * h / 100]
            found.append((result["value"]["brushlabels"][0], box, mask))
        assert_same_objects(found, by_image[name])
    config = (tmp_path / "tasks.label_config.xml").read_text()
    assert '<BrushLabels name="mask" toName="image">' in config and '<RectangleLabels name="label"' in config


def test_label_studio_brush_rle_is_label_studios_encoding(seg_output):
    from label_studio_converter import brush

    from pxflow.pipelines.formats.label_studio import decode_brush, encode_brush

    for rows in list(rows_by_image(seg_output).values())[:2]:
        for row in rows[:3]:
            mask = row_mask(row)
            theirs = brush.mask2rle(mask.astype(np.uint8) * 255)
            mine = encode_brush(mask)
            # the same bits; Label Studio's encoder pads a whole zero byte when the bits already end on a byte
            assert theirs[:len(mine)] == mine and set(theirs[len(mine):]) <= {0} and len(theirs) - len(mine) <= 1
            assert np.array_equal(decode_brush(theirs, *mask.shape), mask)


# --------------------------------------------------------------------------- CVAT

def cvat_mask(element: ET.Element, image_h: int, image_w: int) -> np.ndarray:
    """CVAT's MaskConverter.cvat_rle_to_dm_rle: the counts as an uncompressed COCO RLE of size [w, h], transposed."""
    counts = [int(v) for v in element.attrib["rle"].split(",")]
    left, top, w, h = (int(element.attrib[k]) for k in ("left", "top", "width", "height"))
    tight = mask_utils.decode(mask_utils.frPyObjects([{"counts": counts, "size": [w, h]}], h=h, w=w)[0]).transpose()
    full = np.zeros((image_h, image_w), dtype=bool)
    full[top:top + h, left:left + w] = tight[:, :, 0] if tight.ndim == 3 else tight
    return full


def test_cvat_xml_export_decodes_as_cvat_does(seg_output, tmp_path):
    out = tmp_path / "annotations.xml"
    assert cli_main(["export", "cvat", "--output", seg_output, "--out", str(out)]) == 0
    root = ET.parse(out).getroot()
    assert root.find("version").text == "1.1"
    labels = {e.find("name").text for e in root.iter("label")}
    by_image = rows_by_image(seg_output)
    images = root.findall("image")
    assert len(images) == 6
    for image in images:
        h, w = int(image.attrib["height"]), int(image.attrib["width"])
        boxes = {b.attrib["group_id"]: b for b in image.findall("box")}
        found = []
        for mask in image.findall("mask"):
            box = boxes[mask.attrib["group_id"]]  # a box and its mask are one CVAT group
            assert box.attrib["label"] == mask.attrib["label"] in labels
            found.append((mask.attrib["label"], [float(box.attrib[k]) for k in ("xtl", "ytl", "xbr", "ybr")],
                          cvat_mask(mask, h, w)))
        assert_same_objects(found, by_image[image.attrib["name"]])


def test_cvat_coco_export_loads_in_pycocotools(seg_output, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "coco.json"
    assert cli_main(["export", "cvat", "--output", seg_output, "--out", str(out), "--format", "coco"]) == 0
    coco = COCO(str(out))
    by_image = rows_by_image(seg_output)
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    for image in coco.dataset["images"]:
        found = [(names[a["category_id"]], [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]],
                  coco.annToMask(a) > 0) for a in coco.imgToAnns[image["id"]]]
        assert_same_objects(found, by_image[image["file_name"]])


# --------------------------------------------------------------------------- import-gt

def gt_rows(output: str, import_id: str) -> list[dict]:
    return [r for r in table_rows(output, "ground_truth") if r["import_id"] == import_id]


def test_label_studio_and_cvat_corrections_come_back_as_ground_truth(seg_output, tmp_path, capsys):
    out = tmp_path / "tasks.json"
    assert cli_main(["export", "label-studio", "--output", seg_output, "--out", str(out)]) == 0
    tasks = json.loads(out.read_text())
    # what Label Studio exports after review: task 0 reviewed with one object deleted, task 1 skipped, the rest
    # accepted as predicted; task 2 never opened
    for n, task in enumerate(tasks):
        result = task["predictions"][0]["result"]
        if n == 0:
            result = [r for r in result if not r["id"].startswith("r0")]  # the first object, box and brush
        if n != 2:
            task["annotations"] = [{"result": result, "was_cancelled": n == 1}]
    (tmp_path / "ls_export.json").write_text(json.dumps(tasks))
    capsys.readouterr()
    assert cli_main(["import-gt", "--from", "label-studio", str(tmp_path / "ls_export.json"), "--output", seg_output,
                     "--source", "ls-review"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["images"] == 4 and summary["tasks_unreviewed"] == 2
    rows = gt_rows(seg_output, summary["import_id"])
    by_image = rows_by_image(seg_output)
    kept = {os.path.basename(t["data"]["pxflow_image_uri"]): t for n, t in enumerate(tasks) if n not in (1, 2)}
    for name, task in kept.items():
        expected = by_image[name][1:] if task is tasks[0] else by_image[name]
        mine = [r for r in rows if os.path.basename(r["image_uri"]) == name]
        assert {r["source"] for r in mine} == {"ls-review"}
        assert_same_objects([(r["category"], [r["x1"], r["y1"], r["x2"], r["y2"]], row_mask(r)) for r in mine], expected)

    xml = tmp_path / "annotations.xml"
    assert cli_main(["export", "cvat", "--output", seg_output, "--out", str(xml)]) == 0
    capsys.readouterr()
    assert cli_main(["import-gt", "--from", "cvat", str(xml), "--output", seg_output]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["images"] == 6 and summary["resolved_by_name"] == 6  # CVAT knows names only
    rows = gt_rows(seg_output, summary["import_id"])
    for name, expected in by_image.items():
        mine = [r for r in rows if os.path.basename(r["image_uri"]) == name]
        assert_same_objects([(r["category"], [r["x1"], r["y1"], r["x2"], r["y2"]], row_mask(r)) for r in mine], expected)


def test_eval_against_imported_ground_truth_equals_eval_against_the_file(seg_output, prefect_server, capsys):
    results = {}
    for iou_type in ("bbox", "segm"):
        assert cli_main(["eval", "--output", seg_output, "--gt", str(GT), "--iou-type", iou_type]) == 0
        results[("file", iou_type)] = last_json(capsys.readouterr().out)
    assert cli_main(["import-gt", "--from", "coco", str(GT), "--output", seg_output, "--source", "coco-val"]) == 0
    assert last_json(capsys.readouterr().out)["images_with_uri"] == 6
    for iou_type in ("bbox", "segm"):
        assert cli_main(["eval", "--output", seg_output, "--gt", "lake", "--iou-type", iou_type]) == 0
        lake = last_json(capsys.readouterr().out)
        file = results[("file", iou_type)]
        assert lake["gt_source"] == "coco-val" and lake["images"] == file["images"] == 6
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"):
            assert math.isclose(lake[key], file[key], abs_tol=1e-6), (iou_type, key, lake[key], file[key])
        assert 0.1 < file["AP"] < 1
    # a later import is the default; --gt-source picks an older one
    assert cli_main(["import-gt", "--from", "coco", str(GT), "--output", seg_output, "--source", "later"]) == 0
    capsys.readouterr()
    assert cli_main(["eval", "--output", seg_output, "--gt", "lake"]) == 0
    assert last_json(capsys.readouterr().out)["gt_source"] == "later"
    assert cli_main(["eval", "--output", seg_output, "--gt", "lake", "--gt-source", "coco-val"]) == 0
    assert last_json(capsys.readouterr().out)["gt_source"] == "coco-val"


# --------------------------------------------------------------------------- usage errors

def test_bad_review_input_is_one_line_exit_2_and_writes_nothing(seg_output, tmp_path):
    dead = "http://127.0.0.1:9/api"  # a Prefect server started by mistake would not be reachable
    fresh = tmp_path / "fresh"
    annotate_into(str(fresh), coco_uris(1), threshold=0.5, pipeline="instance_segmentation", model_dir=YOLO_SEG,
                  submodule="InstanceSegmentation")
    broken = tmp_path / "broken.xml"
    broken.write_text('<annotations><image id="0" name="a.jpg" width="4" height="4">'
                      '<mask label="cat" rle="3, 99" left="0" top="0" width="2" height="2"/></image></annotations>')
    for args, says in (
        (["import-gt", "--from", "cvat", str(broken), "--output", str(fresh)], "mask RLE covers 102 pixels"),
        (["import-gt", "--from", "label-studio", str(tmp_path / "missing.json"), "--output", str(fresh)], "no such file"),
        (["import-gt", "--from", "coco", str(broken), "--output", str(fresh)], "not JSON"),
        (["eval", "--output", str(fresh), "--gt", "lake"], "no ground truth"),
        (["export", "label-studio", "--output", str(fresh), "--out", str(tmp_path / "t.json"),
          "--image-root", str(tmp_path)], "is not below --image-root"),
    ):
        proc = pxflow(*args, api_url=dead, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert says in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = pxflow("export", "cvat", "--output", str(fresh), "--out", str(tmp_path / "t.xml"), "--limit", "0",
                  api_url=dead, timeout=120)  # argparse's own usage error
    assert proc.returncode == 2 and "must be at least 1" in proc.stderr
    assert not (fresh / "ground_truth").exists() and not (tmp_path / "t.json").exists()
