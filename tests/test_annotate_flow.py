"""The ``annotate`` flow end to end: real S3 (weed mini), real Prefect server, real PicoDet-XS."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pxflow.flows.cli import main as cli_main
from pxflow.flows.options import AnnotateOptions
from pxflow.pipelines.io import storage
from pxflow.pipelines.io.manifest import iter_input_uris
from pxflow.tasks.annotate_shard import TransientShardError, run_shard
from pxflow.tasks.shards import plan_shards
from tests.support.annotate_helpers import bad_inputs, coco_bbox_map, read_json, read_table, upload_dir
from tests.conftest import COCO_MINI, PICODET_ONNX

REFERENCE_MAP = 0.279  # ../shared/README.md: PicoDet-XS on coco_val_mini, also what PaddleX 3.7.2 gets


def _job(output: str, threshold=0.3):
    from pxflow.tasks.job import prepare_job

    return prepare_job(output, model_dir=str(PICODET_ONNX), threshold=threshold, download_workers=4)


@pytest.mark.slow
def test_annotate_s3_map_every_input_one_row_resume_and_force(s3_server, prefect_server, shared_dir):
    root = s3_server.unique_prefix("annotate")
    coco = upload_dir(COCO_MINI / "images", f"{root}/images/coco")
    bad = bad_inputs((COCO_MINI / "images" / "000000000139.jpg").read_bytes())
    for name, (data, *_rest) in bad.items():
        storage.write_bytes(f"{root}/images/bad/{name}", data)
    output = f"{root}/out"
    argv = ["annotate", "--input", f"{root}/images", "--output", output, "--model_dir", str(PICODET_ONNX),
            "--threshold", "0.001", "--shard-size", "25", "--workers", "2", "--no-progress"]
    assert cli_main(argv) == 0

    images = read_table(f"{output}/images").to_pylist()
    by_uri = {r["image_uri"]: r for r in images}
    expected = set(coco) | {f"{root}/images/bad/{n}" for n in bad}
    assert len(images) == len(expected) == 79 + len(bad)  # exactly one row per input
    assert set(by_uri) == expected
    for name, (_, status, error_type, size) in bad.items():
        row = by_uri[f"{root}/images/bad/{name}"]
        assert (row["status"], row["error_type"]) == (status, error_type), name
        if status == "error":
            assert row["error_message"] and row["num_objects"] == 0
        else:
            assert (row["width"], row["height"]) == size, name
    assert all(by_uri[u]["status"] == "ok" and by_uri[u]["etag"] and by_uri[u]["size_bytes"] > 0 for u in coco)

    objects = read_table(f"{output}/objects").to_pylist()
    per_image = Counter(r["image_uri"] for r in objects)
    assert all(per_image[u] == row["num_objects"] for u, row in by_uri.items())
    assert len({(r["image_uri"], r["object_index"]) for r in objects}) == len(objects)
    assert {r["model_name"] for r in objects} == {"PicoDet-XS"} and len({r["run_key"] for r in objects}) == 1
    coco_map = coco_bbox_map([r for r in objects if r["image_uri"] in set(coco)], COCO_MINI / "instances_val2017.json")
    assert abs(coco_map - REFERENCE_MAP) <= 0.005, coco_map

    run_key = objects[0]["run_key"]
    manifest = read_json(f"{output}/_runs/run={run_key}/manifest.json")
    assert manifest["complete"] and manifest["listed_inputs"] == manifest["rows_images"] == len(expected)
    assert manifest["error_types"] == {"decode_failed": 2, "unsupported_format": 1, "too_large": 1}
    assert manifest["shards_planned"] == 4 and manifest["shards_skipped"] == 0

    from prefect.artifacts import Artifact

    artifact = Artifact.get(f"annotate-{run_key}")
    assert artifact is not None and artifact.type == "table"
    assert {"metric": "listed inputs", "value": len(expected)} in json.loads(artifact.data)

    # rerun: every shard is committed, nothing is recomputed, nothing is duplicated
    assert cli_main(argv) == 0
    again = read_json(f"{output}/_runs/run={run_key}/manifest.json")
    assert again["shards_skipped"] == 4 and again["rows_images"] == len(expected)
    assert read_table(f"{output}/images").num_rows == len(expected)

    # --force recomputes every shard into the same keys
    assert cli_main(argv + ["--force"]) == 0
    forced = read_json(f"{output}/_runs/run={run_key}/manifest.json")
    assert forced["shards_skipped"] == 0 and forced["images_computed"] == len(expected)
    assert read_table(f"{output}/images").num_rows == len(expected)
    assert read_table(f"{output}/objects").num_rows == len(objects)
    assert not list(storage.list_objects(f"{output}/_tmp"))  # staging keys were all moved or removed


def test_key_that_vanishes_after_listing_is_a_not_found_row(s3_server, tmp_path, shared_dir):
    root = s3_server.unique_prefix("vanish")
    uris = upload_dir(COCO_MINI / "images", f"{root}/in", limit=3)
    (shard,) = plan_shards(iter_input_uris(f"{root}/in"), 10)  # listed while all three exist
    storage.delete(uris[1])
    job = _job(str(tmp_path))
    summary = run_shard(job, shard.shard_id, shard.uris)
    assert (summary["n_inputs"], summary["n_ok"], summary["error_types"]) == (3, 2, {"not_found": 1})
    rows = {r["image_uri"]: r for r in read_table(str(tmp_path / "images")).to_pylist()}
    assert rows[uris[1]]["status"] == "error" and rows[uris[1]]["error_type"] == "not_found"
    assert rows[uris[0]]["status"] == rows[uris[2]]["status"] == "ok"


def test_transient_download_failures_retry_the_shard_then_record_errors(s3_server, prefect_server, tmp_path, monkeypatch):
    from dataclasses import replace

    from prefect.blocks.system import Secret

    from tests.support.s3_server import free_port

    monkeypatch.setattr(storage, "S3_MAX_ATTEMPTS", 1)
    monkeypatch.setattr(storage, "S3_READ_ATTEMPTS", 1)
    Secret(value=json.dumps({"endpoint_url": f"http://127.0.0.1:{free_port()}"})).save("pxflow-s3-down", overwrite=True)
    job = replace(_job(str(tmp_path)), s3_block="pxflow-s3-down")  # S3 is down (nothing listens there)
    uris = ["s3://pxflow-test/down/a.jpg", "s3://pxflow-test/down/b.jpg"]
    with pytest.raises(TransientShardError):
        run_shard(job, "shardx", uris, final_attempt=False)
    assert not storage.exists(job.layout.marker_uri("shardx"))  # not committed: the retry redoes it
    summary = run_shard(job, "shardx", uris, final_attempt=True)
    assert summary["error_types"] == {"download_failed": 2}  # last attempt: accounted for, the run goes on
    assert storage.exists(job.layout.marker_uri("shardx"))


def test_manifest_input_with_thread_runner(prefect_server, tmp_path, shared_dir):
    from pxflow.flows.annotate import annotate

    names = sorted(p.name for p in (COCO_MINI / "images").iterdir())[:4]
    manifest = tmp_path / "inputs.csv"
    manifest.write_text("uri\n" + "".join(f"{COCO_MINI / 'images' / n}\n" for n in names) + "missing/nothing.jpg\n")
    result = annotate(input=str(manifest), output=str(tmp_path / "out"), options=AnnotateOptions(
        model_dir=str(PICODET_ONNX), threshold=0.3, shard_size=2, concurrency=2))
    assert result["complete"] and result["listed_inputs"] == 5 and result["shards_planned"] == 3
    assert result["error_types"] == {"not_found": 1}
    rows = read_table(str(tmp_path / "out" / "images")).to_pylist()
    assert sorted(r["image_uri"] for r in rows) == sorted([str(COCO_MINI / "images" / n) for n in names]
                                                          + [str(tmp_path / "missing/nothing.jpg")])


@pytest.mark.slow
def test_dask_local_cluster_loads_the_model_once_per_worker_process(prefect_server, tmp_path, shared_dir):
    from pxflow.flows.annotate import annotate
    from pxflow.pipelines.registry import create_pipeline

    names = sorted(p.name for p in (COCO_MINI / "images").iterdir())[:12]
    src = tmp_path / "in"
    src.mkdir()
    for n in names:
        (src / n).symlink_to(COCO_MINI / "images" / n)
    result = annotate(input=str(src), output=str(tmp_path / "out"), options=AnnotateOptions(
        model_dir=str(PICODET_ONNX), threshold=0.3, shard_size=2, concurrency=2, runner="dask"))
    assert result["complete"] and result["shards_planned"] == 6 and result["rows_images"] == 12
    markers = [read_json(i.uri) for i in storage.list_objects(str(tmp_path / "out" / "_commits"), (".json",))]
    assert len(markers) == 6
    import os

    assert os.getpid() not in {m["pid"] for m in markers}  # the shards ran in Dask worker processes
    loads: dict[int, int] = {}
    for m in markers:
        loads[m["pid"]] = max(loads.get(m["pid"], 0), m["model_loads"])
    assert set(loads.values()) == {1}, loads  # each process loaded the model once, whatever its shard count

    # the rows match the plain pipeline on the same images
    pipeline = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_ONNX)}}})
    expected = {str(src / n): len(r["boxes"]) for n, r in zip(names, pipeline.predict([str(src / n) for n in names], threshold=0.3))}
    got = {r["image_uri"]: r["num_objects"] for r in read_table(str(tmp_path / "out" / "images")).to_pylist()}
    assert got == expected
