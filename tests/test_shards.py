"""Incremental planning, shard ids, run keys and the row builder (no server needed)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from pxflow.pipelines.io.manifest import InputEntry
from pxflow.pipelines.io.storage import ObjectInfo, default_storage
from pxflow.pipelines.predictors import ModelIdentity, PipelineIdentity
from pxflow.pipelines.results import ErrorResult
from pxflow.pipelines.results.base import BaseResult
from pxflow.pipelines.results.detection import DetResult
from pxflow.tasks.plan import PlanStats, plan
from pxflow.tasks.rows import IMAGES_SCHEMA, OBJECTS_SCHEMA, RowBuilder, summarize
from pxflow.tasks.shards import run_key, shard_id

URIS = [f"s3://b/images/{i:05d}.jpg" for i in range(23)]


def _entries(uris, etags=None):
    etags = etags or {}
    return [InputEntry(u, ObjectInfo(u, 10, etags.get(u, "e0"))) for u in uris]


def _plan(entries, annotated=None, size=5, everything=False):
    stats = PlanStats()
    return list(plan(entries, annotated or {}, size, default_storage(), stats, everything)), stats


def test_shard_ids_are_stable_and_depend_on_inputs_and_size():
    a, stats = _plan(_entries(URIS))
    b, _ = _plan(iter(_entries(URIS)))
    assert [s.shard_id for s in a] == [s.shard_id for s in b]
    assert [len(s) for s in a] == [5, 5, 5, 5, 3] and stats.new == 23 and stats.shards == 5
    assert [s.index for s in a] == [0, 1, 2, 3, 4]
    assert sum((list(s.uris) for s in a), []) == URIS  # every input in exactly one shard, in order
    assert len({s.shard_id for s in a}) == 5
    assert shard_id(URIS[:5], 5) != shard_id(URIS[:5], 6)  # another shard size changes every id
    # one rewritten image (new content tag) changes only its own shard's id
    c, _ = _plan(_entries(URIS, {URIS[7]: "e1"}))
    assert [x.shard_id == y.shard_id for x, y in zip(a, c)] == [True, False, True, True, True]
    with pytest.raises(ValueError):
        _plan(_entries(URIS), size=0)


def test_planning_streams_its_input():
    endless = (InputEntry(f"s3://b/{i}.jpg", ObjectInfo(f"s3://b/{i}.jpg", 1, "e")) for i in itertools.count())
    first = next(plan(endless, {}, 4, default_storage(), PlanStats()))  # an endless listing still yields a shard
    assert first.uris == tuple(f"s3://b/{i}.jpg" for i in range(4))


def test_planning_keeps_new_changed_and_retryable_inputs_only():
    done = {URIS[0]: ("e0", False), URIS[1]: ("old", False), URIS[2]: ("e0", True), URIS[3]: ("e0", False)}
    listing = _entries(URIS[:5]) + _entries([URIS[4], URIS[0]])  # two URIs listed twice
    shards, stats = _plan(listing, done)
    assert [u for s in shards for u in s.uris] == [URIS[1], URIS[2], URIS[4]]
    assert (stats.listed, stats.duplicates, stats.unchanged, stats.changed, stats.retried, stats.new) == (5, 2, 2, 1, 1, 1)
    everything, stats = _plan(listing, done, everything=True)
    assert [u for s in everything for u in s.uris] == URIS[:5] and stats.todo == 5


def test_manifest_columns_travel_with_their_input():
    entries = [InputEntry("a.jpg", None, {"prompt": "[[1,2,3,4]]"}), InputEntry("b.jpg", None, {})]
    (shard,), _ = _plan(entries)
    assert shard.options == ({"prompt": "[[1,2,3,4]]"}, None)


def test_run_key_ignores_speed_settings_but_not_results_settings():
    config = {"pipeline_name": "object_detection", "SubModules": {"ObjectDetection": {"model_dir": "/m"}},
              "Pxflow": {"backend": "auto", "load_workers": 2, "prefetch": 8, "cpu_threads": None}}
    sha = PipelineIdentity((ModelIdentity("ObjectDetection", "PicoDet", "sha"),))
    other = PipelineIdentity((ModelIdentity("ObjectDetection", "PicoDet", "other-model"),))
    base = run_key(config, sha, {"threshold": 0.5})
    faster = {**config, "Pxflow": {**config["Pxflow"], "load_workers": 16, "prefetch": 64, "cpu_threads": 4}}
    assert run_key(faster, sha, {"threshold": 0.5}) == base
    assert run_key(config, sha, {"threshold": 0.3}) != base
    assert run_key(config, other, {"threshold": 0.5}) != base
    onnx = {**config, "Pxflow": {**config["Pxflow"], "backend": "onnxruntime"}}
    assert run_key(onnx, sha, {"threshold": 0.5}) != base
    # the model checksum identifies the model: how its directory is spelled does not matter
    respelled = {**config, "SubModules": {"ObjectDetection": {"model_dir": "/m/../m/"}}}
    assert run_key(respelled, sha, {"threshold": 0.5}) == base
    # a new index version is a new key (PP-ShiTuV2 identity carries the index checksum)
    v1 = PipelineIdentity(sha.models, (ModelIdentity("index", "drinks", "v000001"),))
    v2 = PipelineIdentity(sha.models, (ModelIdentity("index", "drinks", "v000002"),))
    assert run_key(config, v1, {"index": "/idx"}) != run_key(config, v2, {"index": "/idx"})


def _builder() -> RowBuilder:
    return RowBuilder("run", "object_detection", "PicoDet-XS", "abc", "shard")


def test_detection_rows_and_error_rows():
    image = np.zeros((40, 60, 3), np.uint8)
    det = DetResult({"input_path": "a.jpg", "boxes": [
        {"cls_id": 2, "label": "car", "score": 0.9, "coordinate": [1.5, 2.0, 30.0, 20.25]},
        {"cls_id": 0, "label": "person", "score": 0.4, "coordinate": [0, 0, 5, 5]},
    ]}, image)
    builder = _builder()
    row = builder.add("a.jpg", det, {"etag": "e", "size_bytes": 10, "download_ms": 1.0, "decode_ms": 2.0})
    assert (row["status"], row["num_objects"], row["width"], row["height"]) == ("ok", 2, 60, 40)
    builder.add("b.jpg", ErrorResult("b.jpg", "decode_failed", "truncated JPEG"), {})
    objects, images = builder.tables()
    assert objects.schema.equals(OBJECTS_SCHEMA) and images.schema.equals(IMAGES_SCHEMA)
    rows = objects.to_pylist()
    assert [(r["object_index"], r["cls_id"], r["label"]) for r in rows] == [(0, 2, "car"), (1, 0, "person")]
    assert (rows[0]["x1"], rows[0]["y1"], rows[0]["x2"], rows[0]["y2"]) == (1.5, 2.0, 30.0, 20.25)
    assert rows[0]["mask_counts"] is None and rows[0]["rec_label"] is None and rows[0]["prompt"] is None
    bad = images.to_pylist()[1]
    assert (bad["status"], bad["error_type"], bad["error_message"], bad["num_objects"]) == (
        "error", "decode_failed", "truncated JPEG", 0)
    assert bad["width"] is None
    assert summarize(builder.images) == {
        "n_inputs": 2, "n_ok": 1, "n_error": 1, "n_retryable": 0, "n_objects": 2, "error_types": {"decode_failed": 1}}


def test_instance_segmentation_masks_become_full_frame_rle():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 3:13] = True
    from pxflow.pipelines.instance_segmentation.result import InstanceSegResult

    res = InstanceSegResult({"boxes": [{"cls_id": 1, "label": "x", "score": 0.8, "coordinate": [3, 5, 13, 10]}],
                             "masks": np.stack([mask])}, np.zeros((20, 30, 3), np.uint8))
    (record,) = res.object_records()
    assert (record["mask_height"], record["mask_width"]) == (20, 30)
    decoded = coco_mask.decode({"size": [20, 30], "counts": record["mask_counts"].encode()})
    assert np.array_equal(decoded.astype(bool), mask)


def test_shitu_and_sam_results_fill_their_nullable_columns():
    from pxflow.pipelines.pp_shitu_v2.result import ShiTuResult

    shitu = ShiTuResult({"boxes": [
        {"labels": ["cola", "juice"], "rec_scores": [0.87, 0.5], "det_score": 0.66, "coordinate": [1, 2, 3, 4]}]},
        index_name="drinks", index_version="v000002")
    (rec,) = shitu.object_records()
    assert (rec["label"], rec["rec_label"], rec["score"], rec["cls_id"]) == ("cola", "cola", 0.66, None)
    assert rec["rec_score"] == pytest.approx(0.87)
    assert (rec["index_name"], rec["index_version"]) == ("drinks", "v000002")

    from pxflow.pipelines.open_vocabulary_segmentation.result import SamSegResult

    mask = np.zeros((10, 10), np.uint8)
    mask[2:6, 4:9] = 1
    rle = coco_mask.encode(np.asfortranarray(mask))
    # as the SAM pipeline builds it: full-frame boolean masks, PaddleX's mask_infos, no prompt_type key
    sam = SamSegResult({"input_path": "s.jpg", "prompts": {"box_prompt": [[4, 2, 9, 6]]}, "masks": mask[None].astype(bool),
                        "mask_infos": [{"label": "box_prompt", "prompt": [4, 2, 9, 6]}]})
    (seg,) = sam.object_records()
    assert (seg["prompt_type"], seg["prompt"], seg["label"]) == ("box", "[4,2,9,6]", "box_prompt")
    assert (seg["x1"], seg["y1"], seg["x2"], seg["y2"]) == (4.0, 2.0, 9.0, 6.0)  # box derived from the mask
    assert seg["mask_counts"] == rle["counts"].decode()

    builder = _builder()
    builder.add("s.jpg", sam, {})
    objects, _ = builder.tables()
    assert objects.column("prompt_type").to_pylist() == ["box"]


def test_a_result_class_can_define_its_own_records():
    class Custom(BaseResult):
        def object_records(self):
            return [{"cls_id": 7, "label": "seven", "score": 1.0, "x1": 0, "y1": 0, "x2": 1, "y2": 1}]

    builder = _builder()
    assert builder.add("c.jpg", Custom({}), {})["num_objects"] == 1
    assert builder.tables()[0].column("cls_id").to_pylist() == [7]


def test_a_result_without_records_is_that_inputs_error_not_the_shards():
    builder = _builder()
    row = builder.add("d.jpg", BaseResult({"boxes": [{"cls_id": 1}]}), {})
    assert (row["status"], row["error_type"]) == ("error", "inference_failed")
    assert "object_records" in row["error_message"]
    assert builder.add("e.jpg", DetResult({"boxes": []}), {})["status"] == "ok"


def test_chained_sam_rows_keep_the_detections_class_and_score():
    from pxflow.pipelines.open_vocabulary_segmentation.result import SamSegResult

    mask = np.zeros((1, 8, 8), bool)
    mask[0, 1:4, 2:6] = True
    sam = SamSegResult({"masks": mask, "mask_infos": [
        {"label": "box_prompt", "prompt": [2, 1, 6, 4], "source": {"cls_id": 2, "label": "car", "score": 0.75}}]})
    (row,) = sam.object_records()
    assert (row["cls_id"], row["label"], row["score"], row["prompt_type"]) == (2, "car", 0.75, "box")
