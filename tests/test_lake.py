"""The Delta output tables: documented queries in Polars and DuckDB, partitioning rules, usage errors before work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pxflow.flows.annotate import annotate
from pxflow.flows.options import AnnotateOptions
from pxflow.tasks.lake import PartitionMismatchError
from tests.conftest import COCO_MINI, PICODET_ONNX, ROOT
from tests.support.annotate_helpers import read_table

DUCKDB_EXTENSIONS = None


def _duckdb():
    import duckdb
    import duckdb_ext

    con = duckdb.connect(config={"extension_directory": os.path.join(list(duckdb_ext.__path__)[0], "extensions")})
    con.sql("LOAD delta")
    return con


@pytest.fixture(scope="module")
def two_keys(prefect_server, tmp_path_factory, shared_dir):
    """One output holding two annotation keys (two thresholds) over the same 5 images."""
    src = tmp_path_factory.mktemp("lake_in")
    for path in sorted((COCO_MINI / "images").iterdir())[:5]:
        (src / path.name).symlink_to(path)
    out = tmp_path_factory.mktemp("lake_out")
    keys = {}
    for threshold in (0.3, 0.6):
        result = annotate(input=str(src), output=str(out), options=AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=threshold))
        keys[threshold] = result["run_key"]
    return src, out, keys


def test_documented_queries_count_one_annotation_key(two_keys):
    import polars as pl

    _, out, keys = two_keys
    objects = read_table(str(out / "objects")).to_pylist()
    low = [r for r in objects if r["run_key"] == keys[0.3]]
    high = [r for r in objects if r["run_key"] == keys[0.6]]
    assert len(low) > len(high) > 0  # two keys side by side in one table

    per_label = (pl.read_delta(str(out / "objects")).filter(pl.col("run_key") == keys[0.3]).group_by("label").len())
    assert dict(zip(per_label["label"].to_list(), per_label["len"].to_list())) == _count(low)

    con = _duckdb()
    rows = con.sql(f"SELECT label, count(*) AS n FROM delta_scan('{out}/objects') WHERE run_key = '{keys[0.6]}' "
                   "GROUP BY label ORDER BY n DESC").fetchall()
    assert dict(rows) == _count(high)
    latest = con.sql(f"SELECT image_uri, run_key FROM delta_scan('{out}/images') "
                     "QUALIFY row_number() OVER (PARTITION BY image_uri ORDER BY annotated_at DESC) = 1").fetchall()
    assert len(latest) == 5 and {k for _, k in latest} == {keys[0.6]}  # the second run is the latest everywhere
    runs = con.sql(f"SELECT run_key, images_inferred, complete FROM delta_scan('{out}/runs') ORDER BY started_at").fetchall()
    assert runs == [(keys[0.3], 5, True), (keys[0.6], 5, True)]


def _count(rows):
    out: dict[str, int] = {}
    for r in rows:
        out[r["label"]] = out.get(r["label"], 0) + 1
    return out


def test_a_partitioned_run_into_an_unpartitioned_table_fails_before_work(two_keys):
    src, out, _ = two_keys
    before = read_table(str(out / "images")).num_rows
    with pytest.raises(PartitionMismatchError, match="partitioned by nothing"):
        annotate(input=str(src), output=str(out), options=AnnotateOptions(model_dir=str(PICODET_ONNX)), partition="dt=2024-01-01")
    assert read_table(str(out / "images")).num_rows == before


def test_prune_drops_rows_of_inputs_that_are_gone(prefect_server, tmp_path, shared_dir):
    src = tmp_path / "in"
    src.mkdir()
    paths = sorted((COCO_MINI / "images").iterdir())[:4]
    for path in paths:
        (src / path.name).symlink_to(path)
    out = tmp_path / "out"
    options = AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=0.5)
    annotate(input=str(src), output=str(out), options=options)
    (src / paths[0].name).unlink()
    kept = annotate(input=str(src), output=str(out), options=options)  # without --prune the old row stays
    assert kept["pruned"] == 0 and read_table(str(out / "images")).num_rows == 4
    pruned = annotate(input=str(src), output=str(out), options=options.model_copy(update={"prune": True}))
    assert pruned["pruned"] == 1
    uris = {r["image_uri"] for r in read_table(str(out / "images")).to_pylist()}
    assert uris == {os.path.realpath(src / p.name) for p in paths[1:]}  # identities: the links' targets
    assert str(paths[0].resolve()) not in {r["image_uri"] for r in read_table(str(out / "objects")).to_pylist()}


def test_replace_swaps_a_whole_partition_in_one_commit(prefect_server, tmp_path, shared_dir):
    src = tmp_path / "in"
    src.mkdir()
    for path in sorted((COCO_MINI / "images").iterdir())[:4]:
        (src / path.name).symlink_to(path)
    out = tmp_path / "out"
    options = AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=0.5, shard_size=1)
    first = annotate(input=str(src), output=str(out), options=options, partition="dt=2024-01-01")
    replaced = annotate(input=str(src), output=str(out), options=options.model_copy(update={"replace": True}),
                        partition="dt=2024-01-01")
    assert replaced["images_inferred"] == 4 and replaced["shards_committed"] == 4
    assert replaced["images_version"] == first["images_version"] + 1  # four shards, one commit in the output table
    rows = read_table(str(out / "images")).to_pylist()
    assert len(rows) == 4 and {r["flow_run_id"] for r in rows} == {replaced["flow_run_id"]}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.run([sys.executable, "-m", "pxflow.flows", "annotate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["empty", "gs", "pipeline", "threshold", "partition"])
def test_usage_errors_exit_2_before_any_prefect_server_starts(case, tmp_path, shared_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    src = COCO_MINI / "images"
    args = {
        "empty": ["--input", str(empty), "--output", str(tmp_path / "o")],
        "gs": ["--input", str(src), "--output", "gs://bucket/out"],
        "pipeline": ["--input", str(src), "--output", str(tmp_path / "o"), "--pipeline", "object_detecton"],
        "threshold": ["--input", str(src), "--output", str(tmp_path / "o"), "--threshold", "5"],
        "partition": ["--input", str(src), "--output", str(tmp_path / "o"), "--partition", "2024-01-01"],
    }[case]
    expected = {"empty": "lists no images", "gs": "gs://", "pipeline": "object_detecton", "threshold": "threshold",
                "partition": "name=value"}[case]
    done = _cli(*args, "--model-dir", str(PICODET_ONNX), "--no-progress")
    assert done.returncode == 2, done.stderr[-2000:]
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert "Starting temporary server" not in done.stderr + done.stdout
    assert not (tmp_path / "o").exists()
    if case == "empty":  # --allow-empty accepts it
        ok = _cli(*args, "--model-dir", str(PICODET_ONNX), "--no-progress", "--allow-empty")
        assert ok.returncode == 0, ok.stderr[-2000:]


def test_shards_committing_at_once_all_land_without_a_shard_retry(tmp_path):
    """Shards finishing together race for the tables (the first creates them, later ones replace rows in a snapshot
    another commit just changed): each commit is redone on the new snapshot, never the shard's inference."""
    import threading

    from pxflow.pipelines.io.storage import Storage
    from pxflow.pipelines.results.base import ErrorResult
    from pxflow.tasks.lake import Lake, app_id
    from pxflow.tasks.rows import RowBuilder

    lake, shards = Lake(str(tmp_path / "out"), Storage()), 6
    barrier, errors = threading.Barrier(shards), []

    def commit(i: int) -> None:
        builder = RowBuilder("key", "object_detection", "m", "sha", f"shard{i}")
        uris = [f"/in/{i}_{j}.png" for j in range(3)]
        for uri in uris:
            builder.add(uri, ErrorResult(uri, "decode_failed", "unreadable"), {"etag": "e"})
        objects, images = builder.tables()
        barrier.wait()
        try:
            lake.commit_shard("key", f"shard{i}", None, uris, objects, images)
        except Exception as exc:  # what Prefect would retry: the whole shard
            errors.append(f"{type(exc).__name__}: {exc}")

    for _ in range(3):  # a fresh table, then tables every shard replaces rows in
        threads = [threading.Thread(target=commit, args=(i,)) for i in range(shards)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert not errors, errors
    uris = read_table(str(tmp_path / "out" / "images")).column("image_uri").to_pylist()
    assert sorted(uris) == sorted(f"/in/{i}_{j}.png" for i in range(shards) for j in range(3))
    images = lake.open("images")
    assert all(images.transaction_version(app_id("key", f"shard{i}")) == 1 for i in range(shards))
