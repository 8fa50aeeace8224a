"""The ``annotate`` flow end to end: real S3 (weed mini), real Prefect server, real PicoDet-XS, Delta tables."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from pxflow.flows.cli import main as cli_main
from pxflow.flows.options import AnnotateOptions
from pxflow.pipelines.io import storage
from pxflow.tasks.annotate_shard import TransientShardError, run_shard
from tests.conftest import COCO_MINI, PICODET_ONNX
from tests.support.annotate_helpers import bad_inputs, coco_bbox_map, read_table, upload_dir

REFERENCE_MAP = 0.279  # ../shared/README.md: PicoDet-XS on coco_val_mini, also what PaddleX 3.7.2 gets


def _job(output: str, threshold=0.3):
    from pxflow.tasks.job import prepare_job

    return prepare_job(output, model_dir=str(PICODET_ONNX), threshold=threshold, download_workers=4)


def _last_run(output: str) -> dict:
    runs = read_table(f"{output}/runs").to_pylist()
    return max(runs, key=lambda r: r["ended_at"])


@pytest.mark.slow
def test_annotate_s3_map_every_input_one_row_and_a_rerun_infers_nothing(s3_server, prefect_server, shared_dir):
    root = s3_server.unique_prefix("annotate")
    coco = upload_dir(COCO_MINI / "images", f"{root}/images/coco")
    bad = bad_inputs((COCO_MINI / "images" / "000000000139.jpg").read_bytes())
    for name, (data, *_rest) in bad.items():
        storage.write_bytes(f"{root}/images/bad/{name}", data)
    output = f"{root}/out"
    argv = ["annotate", "--input", f"{root}/images", "--output", output, "--model-dir", str(PICODET_ONNX),
            "--threshold", "0.001", "--shard-size", "25", "--workers", "2", "--no-progress"]
    assert cli_main(argv) == 0

    images = read_table(f"{output}/images").to_pylist()
    by_uri = {r["image_uri"]: r for r in images}
    expected = set(coco) | {f"{root}/images/bad/{n}" for n in bad}
    assert len(images) == len(expected) == 79 + len(bad)  # exactly one row per input
    assert set(by_uri) == expected
    for name, (_, status, error_type, size) in bad.items():
        row = by_uri[f"{root}/images/bad/{name}"]
        assert (row["status"], row["error_type"], row["retryable"]) == (status, error_type, False), name
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

    run = _last_run(output)
    assert run["complete"] and run["listed"] == run["new"] == run["images_inferred"] == len(expected)
    assert json.loads(run["error_types"]) == {"decode_failed": 2, "unsupported_format": 1, "too_large": 1}
    assert run["shards_planned"] == 4 and run["images_version"] is not None

    from prefect.artifacts import Artifact

    artifact = Artifact.get(f"annotate-{run['run_key']}")
    assert artifact is not None and artifact.type == "markdown"
    assert f"| listed inputs | {len(expected)} |" in artifact.data and "images table" in artifact.data

    # rerun: every input is unchanged, nothing is inferred, nothing is duplicated, and the first run's figures stay
    assert cli_main(argv) == 0
    again = _last_run(output)
    assert (again["unchanged"], again["images_inferred"], again["shards_planned"]) == (len(expected), 0, 0)
    runs = read_table(f"{output}/runs").to_pylist()
    assert sorted(r["images_inferred"] for r in runs) == [0, len(expected)]
    assert read_table(f"{output}/images").num_rows == len(expected)
    assert read_table(f"{output}/objects").num_rows == len(objects)

    # --force re-annotates everything in place: still one row per input
    assert cli_main(argv + ["--force"]) == 0
    assert _last_run(output)["images_inferred"] == len(expected)
    assert read_table(f"{output}/images").num_rows == len(expected)
    assert read_table(f"{output}/objects").num_rows == len(objects)


def _fill(kind: str, s3_server, tmp_path: Path, names: list[str]) -> tuple[str, str]:
    """An input location holding ``names`` from coco_val_mini, and an output root, on local disk or S3."""
    if kind == "s3":
        root = s3_server.unique_prefix("incremental")
        for name in names:
            storage.upload_file(str(COCO_MINI / "images" / name), f"{root}/in/{name}")
        return f"{root}/in", f"{root}/out"
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(COCO_MINI / "images" / name, src / name)
    return str(src), str(tmp_path / "out")


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_rerun_after_changes_annotates_only_new_and_rewritten_images(kind, s3_server, prefect_server, tmp_path, shared_dir):
    names = sorted(p.name for p in (COCO_MINI / "images").iterdir())
    first, late = names[:6], names[6:9]
    src, out = _fill(kind, s3_server, tmp_path, first)
    argv = ["annotate", "--input", src, "--output", out, "--model-dir", str(PICODET_ONNX), "--threshold", "0.3",
            "--shard-size", "4", "--no-progress"]
    assert cli_main(argv) == 0
    before = {r["image_uri"]: r for r in read_table(f"{out}/images").to_pylist()}
    objects_before = read_table(f"{out}/objects").to_pylist()

    # 3 late files arrive and one image is rewritten with another picture
    for name in late:
        storage.upload_file(str(COCO_MINI / "images" / name), f"{src}/{name}") if kind == "s3" else shutil.copy(
            COCO_MINI / "images" / name, Path(src) / name)
    rewritten = f"{src}/{first[0]}" if kind == "s3" else str(Path(src) / first[0])
    time.sleep(0.01)  # a new mtime for the local content tag
    storage.write_bytes(rewritten, (COCO_MINI / "images" / names[20]).read_bytes())
    assert cli_main(argv) == 0

    run = _last_run(out)
    assert (run["new"], run["changed"], run["unchanged"], run["images_inferred"]) == (3, 1, 5, 4)
    images = read_table(f"{out}/images").to_pylist()
    assert len(images) == 9 and len({(r["image_uri"], r["run_key"]) for r in images}) == 9  # no duplicate
    after = {r["image_uri"]: r for r in images}
    assert after[rewritten]["etag"] != before[rewritten]["etag"]
    old_boxes = sorted((r["x1"], r["label"]) for r in objects_before if r["image_uri"] == rewritten)
    objects = read_table(f"{out}/objects").to_pylist()
    new_boxes = sorted((r["x1"], r["label"]) for r in objects if r["image_uri"] == rewritten)
    assert new_boxes != old_boxes and len(new_boxes) == after[rewritten]["num_objects"]
    assert Counter(r["image_uri"] for r in objects) == Counter(
        {u: r["num_objects"] for u, r in after.items() if r["num_objects"]})
    untouched = [u for u in before if u != rewritten]
    assert all(after[u]["annotated_at"] == before[u]["annotated_at"] for u in untouched)  # not re-inferred
    # time travel: the first snapshot still has the old rows of the rewritten image
    from tests.support.annotate_helpers import read_table as read_version

    first_version = min(read_table(f"{out}/runs").to_pylist(), key=lambda r: r["started_at"])["images_version"]
    old = {r["image_uri"]: r for r in read_version(f"{out}/images", version=first_version).to_pylist()}
    assert old[rewritten]["etag"] == before[rewritten]["etag"] and len(old) == 6


def test_key_that_vanishes_after_listing_is_a_not_found_row(s3_server, tmp_path, shared_dir):
    root = s3_server.unique_prefix("vanish")
    uris = upload_dir(COCO_MINI / "images", f"{root}/in", limit=3)
    storage.delete(uris[1])  # listed (by the caller) while it existed; gone when the shard reads it
    job = _job(str(tmp_path))
    summary = run_shard(job, "shard1", uris)
    assert (summary.n_inputs, summary.n_ok, summary.error_types) == (3, 2, {"not_found": 1})
    rows = {r["image_uri"]: r for r in read_table(str(tmp_path / "images")).to_pylist()}
    assert rows[uris[1]]["status"] == "error" and rows[uris[1]]["error_type"] == "not_found"
    assert rows[uris[0]]["status"] == rows[uris[2]]["status"] == "ok"
    assert run_shard(job, "shard1", uris).skipped  # committed: the table's transaction log says so


def test_transient_failures_retry_the_shard_then_stay_retryable(s3_server, prefect_server, tmp_path, monkeypatch):
    from dataclasses import replace

    from prefect.blocks.system import Secret

    from pxflow.tasks.lake import Lake
    from tests.support.s3_server import free_port

    monkeypatch.setattr(storage, "S3_MAX_ATTEMPTS", 1)
    monkeypatch.setattr(storage, "S3_READ_ATTEMPTS", 1)
    Secret(value=json.dumps({"endpoint_url": f"http://127.0.0.1:{free_port()}"})).save("pxflow-s3-down", overwrite=True)
    job = replace(_job(str(tmp_path)), s3_block="pxflow-s3-down")  # S3 is down (nothing listens there)
    uris = ["s3://pxflow-test/down/a.jpg", "s3://pxflow-test/down/b.jpg"]
    with pytest.raises(TransientShardError):
        run_shard(job, "shardx", uris, final_attempt=False)
    lake = Lake(str(tmp_path), storage.default_storage())
    assert lake.open("images") is None  # not committed: the retry redoes it
    summary = run_shard(job, "shardx", uris, final_attempt=True)
    assert summary.error_types == {"download_failed": 2} and summary.n_retryable == 2
    # committed, but as retryable failures: the next run's plan takes them again
    assert lake.annotated(job.run_key, None) == {u: (None, True) for u in uris}


def test_inline_shards_retry_transient_failures_as_the_task_does(s3_server, prefect_server, tmp_path, monkeypatch):
    """Run inline (no flow run) a shard gets the task's attempts: two retried transient failures, then a final
    attempt that commits retryable rows; the retry rule is the task's."""
    from dataclasses import replace

    from deltalake.exceptions import CommitFailedError
    from prefect.blocks.system import Secret

    from pxflow.tasks import annotate_shard as shard_module
    from pxflow.tasks.annotate_shard import ModelFailedError, annotate_shard_inline, retryable
    from tests.support.s3_server import free_port

    monkeypatch.setattr(storage, "S3_MAX_ATTEMPTS", 1)
    monkeypatch.setattr(storage, "S3_READ_ATTEMPTS", 1)
    monkeypatch.setattr(shard_module, "RETRY_DELAYS_S", (0, 0))  # the delays are Prefect's; the attempts matter here
    attempts: list[bool] = []
    real_run_shard = shard_module.run_shard

    def counted(*args, final_attempt: bool, **kwargs):
        attempts.append(final_attempt)
        return real_run_shard(*args, final_attempt=final_attempt, **kwargs)

    monkeypatch.setattr(shard_module, "run_shard", counted)
    Secret(value=json.dumps({"endpoint_url": f"http://127.0.0.1:{free_port()}"})).save("pxflow-s3-down", overwrite=True)
    job = replace(_job(str(tmp_path)), s3_block="pxflow-s3-down")  # S3 is down (nothing listens there)
    uris = ["s3://pxflow-test/down/a.jpg", "s3://pxflow-test/down/b.jpg"]
    summary = annotate_shard_inline(job, "shardx", 7, uris)
    assert attempts == [False, False, True]  # SHARD_RETRIES retries, then the final attempt
    assert summary.shard_index == 7 and summary.error_types == {"download_failed": 2} and summary.n_retryable == 2
    from pxflow.tasks.lake import Lake

    assert Lake(str(tmp_path), storage.default_storage()).annotated(job.run_key, None) == {u: (None, True) for u in uris}
    # what is retried: what may pass later; never a usage or model error, nor a refused credential
    assert retryable(TransientShardError("x")) and retryable(CommitFailedError("x")) and retryable(ConnectionError("x"))
    assert not any(retryable(e) for e in (ModelFailedError("x"), ValueError("x"), PermissionError("x"),
                                          OSError("403 Forbidden"), RuntimeError("x")))


def test_manifest_input_with_thread_runner(prefect_server, tmp_path, shared_dir):
    from pxflow.flows.annotate import annotate

    names = sorted(p.name for p in (COCO_MINI / "images").iterdir())[:4]
    manifest = tmp_path / "inputs.csv"
    manifest.write_text("uri\n" + "".join(f"{COCO_MINI / 'images' / n}\n" for n in names) + "missing/nothing.jpg\n")
    result = annotate(input=str(manifest), output=str(tmp_path / "out"), options=AnnotateOptions(
        model_dir=str(PICODET_ONNX), threshold=0.3, shard_size=2, concurrency=2))
    assert result["complete"] and result["listed"] == 5 and result["shards_planned"] == 3
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
    stats = result["shard_stats"]
    assert len(stats) == 6
    assert os.getpid() not in {pid for pid, _ in stats}  # the shards ran in Dask worker processes
    loads: dict[int, int] = {}
    for pid, count in stats:
        loads[pid] = max(loads.get(pid, 0), count)
    assert set(loads.values()) == {1}, loads  # each process loaded the model once, whatever its shard count

    # the rows match the plain pipeline on the same images
    pipeline = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": str(PICODET_ONNX)}}})
    # rows name each input by its identity: the real path behind the symlink (docs/schema.md, Input identity)
    expected = {os.path.realpath(src / n): len(r["boxes"]) for n, r in zip(names, pipeline.predict([str(src / n) for n in names], threshold=0.3))}
    got = {r["image_uri"]: r["num_objects"] for r in read_table(str(tmp_path / "out" / "images")).to_pylist()}
    assert got == expected
