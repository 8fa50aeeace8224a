"""`pxflow lake optimize|vacuum` on real Delta tables with many small per-shard commits (no mocks)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pxflow.flows.cli import main as cli_main
from pxflow.pipelines.io.storage import default_storage
from pxflow.tasks.lake import Lake
from tests.test_export_eval import annotate_into, coco_uris, last_json, pxflow


def _state(output: str) -> dict[str, dict]:
    """Per table: the active data files and the sorted rows, read with deltalake directly."""
    from deltalake import DeltaTable

    found = {}
    for name in ("images", "objects", "runs"):
        table = DeltaTable(f"{output}/{name}")
        rows = table.to_pyarrow_table().to_pylist()
        found[name] = {"files": sorted(table.file_uris()), "version": table.version(),
                       "rows": sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)}
    return found


def _parquet_on_disk(output: str, table: str) -> set[str]:
    """Data files (the log's checkpoints excluded)."""
    return {str(p) for p in Path(output, table).rglob("*.parquet") if "_delta_log" not in p.parts}


@pytest.fixture()
def small_commits(tmp_path, shared_dir) -> str:
    """12 real images in shards of 2 (6 commits per table) and a runs table of 3 appends."""
    out = str(tmp_path / "out")
    annotate_into(out, coco_uris(12), shard_size=2, threshold=0.3)
    lake = Lake(out, default_storage())
    for n in range(3):
        lake.append("runs", pa.table({"run_key": ["0c0ffee000000001"], "attempt": [n]}))
    return out


def test_optimize_compacts_and_keeps_rows_then_vacuum_keeps_what_versions_need(small_commits, prefect_server, capsys):
    from deltalake import DeltaTable

    before = _state(small_commits)
    assert len(before["images"]["files"]) == 6 and len(before["objects"]["files"]) == 6 and len(before["runs"]["files"]) == 3
    assert len(before["images"]["rows"]) == 12

    assert cli_main(["lake", "optimize", "--output", small_commits]) == 0
    report = last_json(capsys.readouterr().out)["optimize"]
    after = _state(small_commits)
    for name in ("images", "objects", "runs"):
        assert len(after[name]["files"]) == 1 < len(before[name]["files"]), name
        assert after[name]["rows"] == before[name]["rows"], name  # same rows, fewer files
        assert after[name]["version"] == before[name]["version"] + 1
        assert report[name]["files_before"] == len(before[name]["files"]) and report[name]["files_after"] == 1
    # the replaced files are still there: an older snapshot (a reader that opened it) still reads
    old = DeltaTable(f"{small_commits}/objects", version=before["objects"]["version"]).to_pyarrow_table()
    assert old.num_rows == len(before["objects"]["rows"])

    # default retention (168 h): the files optimize just replaced are kept, nothing current is touched
    assert cli_main(["lake", "vacuum", "--output", small_commits]) == 0
    vacuum = last_json(capsys.readouterr().out)["vacuum"]
    assert all(vacuum[name]["files_deleted"] == 0 for name in ("images", "objects", "runs"))
    assert _state(small_commits) == after
    assert len(_parquet_on_disk(small_commits, "objects")) == 6 + 1
    assert DeltaTable(f"{small_commits}/objects", version=before["objects"]["version"]).to_pyarrow_table().num_rows == old.num_rows

    # below the floor: refused, nothing deleted
    assert cli_main(["lake", "vacuum", "--output", small_commits, "--retention-hours", "0.5"]) == 2
    assert "floor" in capsys.readouterr().err
    assert len(_parquet_on_disk(small_commits, "objects")) == 7

    # a dry run lists what a forced zero retention would delete and deletes nothing
    assert cli_main(["lake", "vacuum", "--output", small_commits, "--retention-hours", "0", "--force", "--dry-run"]) == 0
    listed = last_json(capsys.readouterr().out)["vacuum"]
    assert listed["objects"]["files_to_delete"] == 6 and listed["images"]["files_to_delete"] == 6
    assert len(_parquet_on_disk(small_commits, "objects")) == 7

    # forced: only the replaced files go; the current version reads exactly as before
    assert cli_main(["lake", "vacuum", "--output", small_commits, "--retention-hours", "0", "--force"]) == 0
    done = last_json(capsys.readouterr().out)["vacuum"]
    assert done["objects"]["files_deleted"] == 6 and done["runs"]["files_deleted"] == 3
    final = _state(small_commits)
    for name in after:  # vacuum commits its own log entries: same files and rows, a newer version
        assert final[name]["files"] == after[name]["files"] and final[name]["rows"] == after[name]["rows"]
    for name in ("images", "objects"):
        assert _parquet_on_disk(small_commits, name) == {u.removeprefix("file://") for u in after[name]["files"]}


def test_usage_errors_exit_2_before_any_flow(tmp_path, small_commits):
    dead = "http://127.0.0.1:9/api"  # a flow started by mistake would fail to reach this, not exit 2
    for args in (["lake", "optimize", "--output", str(tmp_path / "nothing")],
                 ["lake", "vacuum", "--output", small_commits, "--retention-hours", "0.99"]):
        proc = pxflow(*args, api_url=dead, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_weekly_maintenance_flow_compacts_and_vacuums_safely(small_commits, prefect_server):
    from pxflow.flows.maintenance import RetentionTooShortError, lake_maintenance

    before = _state(small_commits)
    result = lake_maintenance(output=small_commits)
    assert {name: r["files_after"] for name, r in result["optimize"].items()} == {"images": 1, "objects": 1, "runs": 1}
    assert all(r["files_deleted"] == 0 for r in result["vacuum"].values())
    after = _state(small_commits)
    assert all(after[n]["rows"] == before[n]["rows"] for n in after)
    with pytest.raises(RetentionTooShortError):
        lake_maintenance(output=small_commits, retention_hours=0)
    assert _state(small_commits) == after


def test_vacuum_removes_stale_staging_but_not_a_running_replace_or_a_pending_swap(tmp_path, prefect_server, capsys):
    """`_staging/<run_id>/` of a failed or killed `--replace` is garbage once nothing touched it for the retention;
    one written to recently (a running replace) or holding a swap intent (a decided swap) is not."""
    out = tmp_path / "out"
    Lake(str(out), default_storage()).append("runs", pa.table({"run_key": ["0c0ffee000000001"]}))
    week_ago = time.time() - 200 * 3600
    for name in ("killed-run", "running-run", "decided-run"):
        Lake(str(out / "_staging" / name), default_storage()).append("images", pa.table({"image_uri": ["a.jpg"]}))
    (out / "_staging" / "decided-run" / "_swap.json").write_text(
        json.dumps({"run_key": "0c0ffee000000001", "partition": None, "staged": {"objects": None, "images": 0}}))
    for name in ("killed-run", "decided-run"):
        for path in (out / "_staging" / name).rglob("*"):
            os.utime(path, (week_ago, week_ago))

    assert cli_main(["lake", "vacuum", "--output", str(out)]) == 0  # the default retention, 168 h
    report = last_json(capsys.readouterr().out)["vacuum"]["_staging"]
    assert sorted(p.name for p in (out / "_staging").iterdir()) == ["decided-run", "running-run"]
    assert report["folders"] == [str(out / "_staging" / "killed-run")] and report["files_deleted"] >= 2
    assert report["pending_swaps"] == [str(out / "_staging" / "decided-run")]
    assert (out / "runs" / "_delta_log").is_dir()
