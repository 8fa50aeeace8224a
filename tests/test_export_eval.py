"""`pxflow eval` and `pxflow export coco` on real Delta tables of real model output (no mocks).

The PicoDet-XS table is what `annotate` writes: the real pipeline over coco_val_mini, rows from
`tasks.rows.RowBuilder`, one `Lake.commit_shard` per shard. Expected numbers come from
../shared/README.md (bbox AP 0.279, AP50 0.431) or from pycocotools / the ground truth itself.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pxflow.flows.cli import main as cli_main
from pxflow.pipelines.io.storage import default_storage
from pxflow.tasks.lake import Lake
from pxflow.tasks.rows import IMAGES_SCHEMA, OBJECTS_SCHEMA, RowBuilder
from tests.conftest import COCO_MINI, PICODET_ONNX, ROOT

GT = COCO_MINI / "instances_val2017.json"
REFERENCE_AP, REFERENCE_AP50 = 0.279, 0.431  # ../shared/README.md
RUN_KEY = "0c0ffee000000001"
WHEN = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
PXFLOW = str(Path(sys.executable).parent / "pxflow")


def annotate_into(output: str, uris: list[str], run_key: str = RUN_KEY, shard_size: int = 20,
                  threshold: float = 0.001, partition: str | None = None, pipeline: str = "object_detection",
                  model_dir: Path = PICODET_ONNX, submodule: str = "ObjectDetection") -> None:
    """What `annotate` does per shard: PicoDet-XS (ONNX, or another model) -> RowBuilder -> Lake.commit_shard."""
    from pxflow import create_pipeline

    pipe = create_pipeline(pipeline=pipeline, config={"SubModules": {submodule: {"model_dir": str(model_dir)}}})
    lake = Lake(output, default_storage())
    for start in range(0, len(uris), shard_size):
        shard = uris[start:start + shard_size]
        shard_id = f"{start:016x}"
        builder = RowBuilder(run_key, pipeline, model_dir.name, "0" * 64, shard_id)
        for uri, result in zip(shard, pipe.predict(shard, threshold=threshold), strict=True):
            builder.add(uri, result, {})
        objects, images = builder.tables()
        lake.commit_shard(run_key, shard_id, partition, shard, objects, images)


def coco_uris(limit: int | None = None) -> list[str]:
    return sorted(str(p) for p in (COCO_MINI / "images").iterdir())[:limit]


def cli_env(api_url: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": str(ROOT)}


def pxflow(*args: str, api_url: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PXFLOW, *args], cwd=ROOT, env=cli_env(api_url), capture_output=True, text=True, timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def picodet_output(tmp_path_factory, shared_dir, prefect_server) -> str:
    """The real `pxflow annotate` output of PicoDet-XS (ONNX) on all of coco_val_mini, threshold 0.001 (4 shards)."""
    out = str(tmp_path_factory.mktemp("picodet") / "out")
    proc = pxflow("annotate", "--input", str(COCO_MINI / "images"), "--output", out, "--model-dir", str(PICODET_ONNX),
                  "--threshold", "0.001", "--shard-size", "20", "--no-progress", api_url=prefect_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isdir(os.path.join(out, "images", "_delta_log"))
    return out


def the_run_key(output: str) -> str:
    (key,) = {r["run_key"] for r in table_rows(output, "images")}
    return key


def table_rows(output: str, table: str) -> list[dict]:
    """The table's rows, read with deltalake directly (not through the code under test)."""
    from deltalake import DeltaTable

    return DeltaTable(f"{output}/{table}").to_pyarrow_table().to_pylist()


# --------------------------------------------------------------------------- bbox: the real CLI

@pytest.mark.slow
def test_eval_cli_gives_the_reference_bbox_ap_and_a_json_last_line(picodet_output, prefect_server):
    proc = pxflow("eval", "--output", picodet_output, "--gt", str(GT), api_url=prefect_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json(proc.stdout)
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "images"} <= set(result)
    assert abs(result["AP"] - REFERENCE_AP) <= 0.005, result
    assert abs(result["AP50"] - REFERENCE_AP50) <= 0.005, result
    run_key = the_run_key(picodet_output)
    assert result["images"] == 79 and result["run_key"] == run_key and result["iou_type"] == "bbox"
    assert result["AP75"] <= result["AP50"] and 0 < result["APl"] <= 1

    from prefect.artifacts import Artifact

    artifact = Artifact.get(f"eval-{run_key}")
    assert artifact is not None and artifact.type == "markdown"
    assert f"| AP | {result['AP']:.4f} |" in artifact.data


def test_export_results_round_trip_through_loadres(picodet_output, prefect_server, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "dets.json"
    assert cli_main(["export", "coco", "--output", picodet_output, "--out", str(out), "--gt", str(GT)]) == 0
    detections = json.loads(out.read_text())
    objects = table_rows(picodet_output, "objects")
    assert len(detections) == len(objects)  # every PicoDet class id is one of the 80 COCO categories

    gt = COCO(str(GT))
    # category ids: the ground truth's category with the row's label as its name
    by_name = {img["file_name"]: img["id"] for img in gt.dataset["images"]}
    def key(image_id, score, x, y, w, h):
        return image_id, round(score, 4), round(x, 1), round(y, 1), round(w, 1), round(h, 1)

    by_key = {key(by_name[os.path.basename(r["image_uri"])], r["score"], r["x1"], r["y1"], r["x2"] - r["x1"],
                  r["y2"] - r["y1"]): r for r in objects}
    for det in detections[::20]:
        row = by_key[key(det["image_id"], det["score"], *det["bbox"])]
        assert gt.cats[det["category_id"]]["name"] == row["label"]
        assert det["bbox"] == pytest.approx([row["x1"], row["y1"], row["x2"] - row["x1"], row["y2"] - row["y1"]], abs=1e-3)
        assert "segmentation" not in det  # a detector has no masks

    dt = gt.loadRes(str(out))
    evaluation = COCOeval(gt, dt, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert abs(evaluation.stats[0] - REFERENCE_AP) <= 0.005
    assert abs(evaluation.stats[1] - REFERENCE_AP50) <= 0.005


def test_export_dataset_loads_in_pycocotools_with_one_image_per_row(picodet_output, prefect_server, tmp_path):
    from PIL import Image
    from pycocotools.coco import COCO

    out = tmp_path / "dataset.json"
    assert cli_main(["export", "coco", "--output", picodet_output, "--out", str(out), "--format", "dataset"]) == 0
    coco = COCO(str(out))
    images = table_rows(picodet_output, "images")
    objects = table_rows(picodet_output, "objects")
    assert len(coco.imgs) == len(images) == 79
    files = {img["file_name"]: img for img in coco.dataset["images"]}
    assert set(files) == {os.path.basename(r["image_uri"]) for r in images}
    for name in sorted(files)[:10]:
        with Image.open(COCO_MINI / "images" / name) as pil:
            assert (files[name]["width"], files[name]["height"]) == pil.size
    assert len(coco.anns) == len(objects)
    # categories are the labels: each annotation's category is named as its row's label
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    assert names[1] == "person" and len(names) <= 80
    rows_by = sorted((os.path.basename(r["image_uri"]), r["label"], round(r["score"], 5)) for r in objects)
    anns_by = sorted((coco.imgs[a["image_id"]]["file_name"], names[a["category_id"]], round(a["score"], 5))
                     for a in coco.dataset["annotations"])
    assert anns_by == rows_by
    assert all(a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3]) for a in coco.dataset["annotations"])

    # with --gt the image ids are the ground truth's
    with_gt = tmp_path / "dataset_gt.json"
    assert cli_main(["export", "coco", "--output", picodet_output, "--out", str(with_gt), "--format", "dataset",
                     "--gt", str(GT)]) == 0
    gt = COCO(str(GT))
    mine = COCO(str(with_gt))
    assert {(i["id"], i["file_name"]) for i in mine.dataset["images"]} == {(i["id"], i["file_name"]) for i in gt.dataset["images"]}
    assert mine.dataset["categories"] == gt.dataset["categories"]


# --------------------------------------------------------------------------- run keys and usage errors

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, shared_dir) -> str:
    out = str(tmp_path_factory.mktemp("two_runs") / "out")
    uris = coco_uris(3)
    annotate_into(out, uris, run_key="aaaaaaaaaaaaaaaa", threshold=0.3)
    annotate_into(out, uris, run_key="bbbbbbbbbbbbbbbb", threshold=0.5)
    return out


def test_several_run_keys_need_run_key_and_usage_errors_exit_2_before_prefect(two_runs, tmp_path):
    dead = "http://127.0.0.1:9/api"  # a flow started by mistake would fail to reach this, not exit 2
    proc = pxflow("eval", "--output", two_runs, "--gt", str(GT), api_url=dead, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "aaaaaaaaaaaaaaaa" in proc.stderr and "bbbbbbbbbbbbbbbb" in proc.stderr and "--run-key" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    for args in (
        ["eval", "--output", str(tmp_path / "nothing"), "--gt", str(GT)],
        ["eval", "--output", two_runs, "--gt", str(GT), "--run-key", "cccccccccccccccc"],
        ["eval", "--output", two_runs, "--gt", str(tmp_path / "missing.json"), "--run-key", "aaaaaaaaaaaaaaaa"],
        ["export", "coco", "--output", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.json")],
        ["export", "coco", "--output", two_runs, "--out", str(tmp_path / "x.json")],
    ):
        proc = pxflow(*args, api_url=dead, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "x.json").exists()
    assert "no Delta table" in pxflow("eval", "--output", str(tmp_path / "nothing"), "--gt", str(GT), api_url=dead).stderr


def test_run_key_chooses_the_run(two_runs, prefect_server, tmp_path):
    counts = {}
    for key in ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"):
        out = tmp_path / f"{key}.json"
        assert cli_main(["export", "coco", "--output", two_runs, "--out", str(out), "--run-key", key, "--gt", str(GT)]) == 0
        counts[key] = len(json.loads(out.read_text()))
    expected = {key: sum(1 for r in table_rows(two_runs, "objects") if r["run_key"] == key) for key in counts}
    assert counts == expected and expected["aaaaaaaaaaaaaaaa"] > expected["bbbbbbbbbbbbbbbb"] > 0  # 0.3 keeps more than 0.5


# --------------------------------------------------------------------------- segm: masks equal to the ground truth

def _gt_mask_table(output: str, n_images: int = 3) -> tuple[list[int], int]:
    """Rows whose boxes and masks ARE the ground truth's (non-crowd) annotations of a few images."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    gt = COCO(str(GT))
    categories = sorted(gt.getCatIds())
    names = {c["id"]: c["name"] for c in gt.dataset["categories"]}
    image_ids = sorted(gt.getImgIds())[:n_images]
    objects, images = [], []
    common = {"run_key": "5e65e65e65e65e65", "pipeline": "instance_segmentation", "model_name": "gt",
              "model_sha256": "0" * 64, "shard_id": "0" * 16}
    uris = []
    for image_id in image_ids:
        info = gt.imgs[image_id]
        uri = str(COCO_MINI / "images" / info["file_name"])
        uris.append(uri)
        anns = [a for a in gt.imgToAnns[image_id] if not a.get("iscrowd")]
        for index, ann in enumerate(anns):
            rle = gt.annToRLE(ann)
            x, y, w, h = ann["bbox"]
            objects.append({**common, "image_uri": uri, "object_index": index, "cls_id": categories.index(ann["category_id"]),
                            "label": names[ann["category_id"]], "score": 0.9, "x1": x, "y1": y, "x2": x + w, "y2": y + h,
                            "mask_counts": rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"],
                            "mask_height": info["height"], "mask_width": info["width"]})
        images.append({**common, "image_uri": uri, "status": "ok", "retryable": False, "width": info["width"],
                       "height": info["height"], "num_objects": len(anns), "annotated_at": WHEN})
        assert mask_utils.area(rle) > 0
    images_table = pa.Table.from_pylist(images, schema=IMAGES_SCHEMA)
    Lake(output, default_storage()).commit_shard("5e65e65e65e65e65", "0" * 16, None, uris,
                                                 pa.Table.from_pylist(objects, schema=OBJECTS_SCHEMA), images_table)
    return image_ids, len(objects)


def test_segm_eval_and_export_of_ground_truth_masks(prefect_server, tmp_path, capsys, shared_dir):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    output = str(tmp_path / "seg")
    image_ids, n_objects = _gt_mask_table(output)
    for iou_type in ("segm", "bbox"):
        assert cli_main(["eval", "--output", output, "--gt", str(GT), "--iou-type", iou_type]) == 0
        result = last_json(capsys.readouterr().out)
        assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0), (iou_type, result)
        assert result["images"] == len(image_ids) and result["detections"] == n_objects

    out = tmp_path / "segm.json"
    assert cli_main(["export", "coco", "--output", output, "--out", str(out), "--gt", str(GT)]) == 0
    detections = json.loads(out.read_text())
    gt = COCO(str(GT))
    assert len(detections) == n_objects and all("segmentation" in d for d in detections)
    dt = gt.loadRes(str(out))
    for det in dt.dataset["annotations"]:
        decoded = mask_utils.decode(dt.annToRLE(det))
        best = max((a for a in gt.imgToAnns[det["image_id"]] if a["category_id"] == det["category_id"]),
                   key=lambda a: (gt.annToMask(a) & decoded).sum())
        assert np.array_equal(gt.annToMask(best), decoded)

    dataset = tmp_path / "segm_dataset.json"
    assert cli_main(["export", "coco", "--output", output, "--out", str(dataset), "--format", "dataset"]) == 0
    mine = COCO(str(dataset))
    assert len(mine.imgs) == len(image_ids) and len(mine.anns) == n_objects
    for ann in mine.dataset["annotations"]:
        assert ann["area"] == pytest.approx(float(mine.annToMask(ann).sum()))


def test_segm_on_a_detector_table_is_a_usage_error(picodet_output, prefect_server, capsys):
    assert cli_main(["eval", "--output", picodet_output, "--gt", str(GT), "--iou-type", "segm"]) == 2
    assert "needs masks" in capsys.readouterr().err


# --------------------------------------------------------------------------- PP-ShiTuV2 recall@1

def test_recall_at_1_of_the_top_scoring_box(prefect_server, tmp_path, capsys):
    gallery = tmp_path / "query"
    gallery.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (gallery / name).write_bytes(b"")
    (gallery / "labels.txt").write_text("a.jpg\tcola\nb.jpg\ttea\nc.jpg\twater\n", encoding="utf-8")
    common = {"run_key": "5417a5417a5417a5", "pipeline": "PP-ShiTuV2", "model_name": "shitu", "model_sha256": "0" * 64,
              "shard_id": "1" * 16}
    boxes = {"a.jpg": [(0.9, "cola"), (0.5, "tea")],   # top box right -> hit
             "b.jpg": [(0.3, "tea"), (0.8, "juice")],   # top box wrong -> miss
             "c.jpg": [],                               # nothing found -> miss
             "d.jpg": [(0.7, "cola")]}                  # not in the label file -> not scored
    objects, images = [], []
    for name, found in boxes.items():
        uri = str(gallery / name)
        for index, (score, label) in enumerate(found):
            objects.append({**common, "image_uri": uri, "object_index": index, "label": label, "score": score,
                            "x1": 0.0, "y1": 0.0, "x2": 5.0, "y2": 5.0, "rec_label": label, "rec_score": 0.6})
        images.append({**common, "image_uri": uri, "status": "ok", "retryable": False, "width": 5, "height": 5,
                       "num_objects": len(found), "annotated_at": WHEN})
    output = str(tmp_path / "shitu")
    Lake(output, default_storage()).commit_shard(
        common["run_key"], common["shard_id"], None, [str(gallery / n) for n in boxes],
        pa.Table.from_pylist(objects, schema=OBJECTS_SCHEMA), pa.Table.from_pylist(images, schema=IMAGES_SCHEMA))
    assert cli_main(["eval", "--output", output, "--labels", str(gallery / "labels.txt")]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["recall@1"] == pytest.approx(1 / 3) and result["recall_images"] == 3 and result["recall_hits"] == 1
    assert result["recall_unlabeled_images"] == 1 and result["images"] == 4 and result["pipeline"] == "PP-ShiTuV2"
