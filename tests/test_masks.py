"""Mask helpers: binarisation, framing, COCO RLE, the Parquet column form, and mask AP on real COCO polygons."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from pxflow.pipelines.ops import masks as M
from tests.conftest import COCO_MINI, require_shared
from tests.support.seg_models import seg_models  # noqa: F401  (fixture)


def test_binarize_by_dtype():
    assert M.binarize(np.array([0, 1, 2], np.int32)).tolist() == [False, True, True]
    assert M.binarize(np.array([0.2, 0.5, 0.51], np.float32)).tolist() == [False, False, True]
    assert M.binarize(np.array([True, False])).tolist() == [True, False]


def test_fit_to_frame_crops_pads_and_resizes():
    big = np.zeros((1, 6, 8), np.int32)
    big[0, 1:3, 2:4] = 1
    big[0, 5, 7] = 1  # batch padding region: must be cut off
    fit = M.fit_to_frame(M.binarize(big), 4, 5)
    assert fit.shape == (1, 4, 5) and fit.sum() == 4 and fit[0, 1:3, 2:4].all()
    short = np.ones((1, 3, 4), bool)  # one pixel short (rounding of im_shape / scale_factor)
    padded = M.fit_to_frame(short, 4, 5)
    assert padded.shape == (1, 4, 5) and padded.sum() == 12 and not padded[0, 3].any()
    low = np.zeros((1, 2, 2), bool)
    low[0, 0, 0] = True
    up = M.fit_to_frame(low, 10, 10)
    assert up.shape == (1, 10, 10) and up[0, :5, :5].all() and up.sum() == 25


def test_box_mask_uses_pixel_centres():
    m = M.box_mask([1.0, 0.5, 3.4, 2.6], height=4, width=5)
    # columns whose centre (x + 0.5) is in [1, 3.4): 1, 2; rows with centre in [0.5, 2.6): 0, 1, 2
    expected = np.zeros((4, 5), bool)
    expected[0:3, 1:3] = True
    assert (m == expected).all()


def test_mask_to_box_and_rle_box_agree():
    m = np.zeros((7, 9), bool)
    m[2:5, 3:8] = True
    assert M.mask_to_box(m) == [3.0, 2.0, 8.0, 5.0]
    assert M.rle_box(M.encode_rle(m)) == [3.0, 2.0, 8.0, 5.0]
    assert M.mask_to_box(np.zeros((3, 3), bool)) is None


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (64, 48)])
def test_rle_round_trip_is_bit_exact(shape):
    rng = np.random.default_rng(sum(shape))
    masks = np.stack([rng.random(shape) > 0.5, np.zeros(shape, bool), np.ones(shape, bool)])
    rles = M.encode_rles(masks)
    for mask, rle in zip(masks, rles):
        assert isinstance(rle["counts"], str) and rle["size"] == list(shape)
        assert (M.decode_rle(rle) == mask).all()
        assert M.rle_area(rle) == int(mask.sum())
        cols = M.rle_to_columns(rle)
        assert set(cols) == {"mask_counts", "mask_height", "mask_width"}
        assert (M.columns_to_mask(cols) == mask).all()
        assert json.loads(json.dumps(rle)) == rle  # JSON-ready as is
    assert M.encode_rles(np.zeros((0, 3, 3), bool)) == []


def test_segmentation_to_rle_accepts_every_coco_form():
    poly = [[1.0, 1.0, 6.0, 1.0, 6.0, 4.0, 1.0, 4.0]]
    from_poly = M.segmentation_to_rle(poly, 8, 10)
    dense = M.decode_rle(from_poly)
    assert dense.shape == (8, 10) and dense.sum() > 0
    uncompressed = {"size": [8, 10], "counts": [int(c) for c in _uncompressed_counts(dense)]}
    assert (M.decode_rle(M.segmentation_to_rle(uncompressed, 8, 10)) == dense).all()
    assert (M.decode_rle(M.segmentation_to_rle(from_poly, 8, 10)) == dense).all()


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


@pytest.fixture(scope="module")
def coco_gt():
    require_shared()
    from pxflow.pipelines.evaluation import load_coco

    return load_coco(str(COCO_MINI / "instances_val2017.json"))


def test_oracle_scores_mask_ap_one_through_our_rle_path(coco_gt, seg_models, tmp_path):
    """GT polygons rasterised by pycocotools -> our postprocessing -> result JSON RLE -> COCOeval segm AP 1.0."""
    from pxflow.pipelines.evaluation import coco_eval

    from pxflow.pipelines.predictors.instance_segmentation import InstanceSegPredictor, RawInstances
    from pxflow.pipelines.instance_segmentation.result import InstanceSegResult

    model = InstanceSegPredictor(model_dir=seg_models["maskbox"], backend="paddle", threshold=0.5)
    detections, rows_for_parquet, dense_by_row = [], [], []
    for image_id in coco_gt.getImgIds():
        info = coco_gt.imgs[image_id]
        h, w = info["height"], info["width"]
        anns = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_id)) if not a["iscrowd"]]
        if not anns:
            continue
        dense = np.stack([coco_gt.annToMask(a) for a in anns])  # what an export emits: int 0/1 masks...
        padded = np.zeros((len(anns), h + 7, w + 3), np.int32)  # ...on a frame padded to a batch's largest image
        padded[:, :h, :w] = dense
        rows = np.array([[0, 1.0, a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns], np.float32)
        boxes, masks = model.postprocess_instances(RawInstances(rows, padded), w, h)
        assert len(boxes) == len(anns)
        result = InstanceSegResult({"input_path": info["file_name"], "page_index": None, "boxes": boxes, "masks": masks})
        body = json.loads(json.dumps(result.json))["res"]
        for ann, rle, record in zip(anns, body["masks"], result.object_records()):
            assert rle["size"] == [h, w]
            detections.append({"image_id": image_id, "category_id": ann["category_id"], "segmentation": rle, "score": 1.0})
            cols = {k: record[k] for k in ("mask_counts", "mask_height", "mask_width")}
            rows_for_parquet.append({"image_id": image_id, **cols})
        dense_by_row.extend(dense.astype(bool))
    assert len(detections) > 500
    stats = coco_eval(coco_gt, detections, iou_type="segm")
    assert stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
    assert stats[1] == pytest.approx(1.0)  # AP50

    # RLE -> Parquet-ready dict -> a real Parquet file -> decode: bit-exact
    path = tmp_path / "objects.parquet"
    pq.write_table(pa.Table.from_pylist(rows_for_parquet), path)
    table = pq.read_table(path)
    assert table.schema.field("mask_counts").type == pa.string()
    for row, dense in zip(table.to_pylist(), dense_by_row):
        assert (M.columns_to_mask(row) == dense).all()
    # and our RLE is byte-for-byte what pycocotools makes of the dense mask
    ref = mask_utils.encode(np.asfortranarray(dense_by_row[0].astype(np.uint8)))
    assert rows_for_parquet[0]["mask_counts"] == ref["counts"].decode()
