"""The ``backfill`` flow over Hive date partitions, on the real Prefect server."""

from __future__ import annotations

import os

import datetime as dt
import json

import pytest

from pxflow.flows.backfill import date_partitions, parse_day
from pxflow.flows.cli import main as cli_main
from tests.support.annotate_helpers import read_table
from tests.conftest import COCO_MINI, PICODET_ONNX
from tests.test_export_eval import pxflow


def test_relative_days_for_schedules():
    today = dt.date(2024, 3, 1)
    assert parse_day("yesterday", today) == dt.date(2024, 2, 29)
    assert parse_day("today-2", today) == dt.date(2024, 2, 28)
    assert parse_day("today", today) == today
    assert parse_day("2023-12-31", today) == dt.date(2023, 12, 31)
    with pytest.raises(ValueError):
        parse_day("last week", today)


def test_backfill_annotates_partitions_in_range_and_then_only_late_files(prefect_server, tmp_path, shared_dir, capsys):
    images = sorted((COCO_MINI / "images").iterdir())
    layout = {"dt=2024-01-01": images[0:2], "dt=2024-01-02": images[2:4], "dt=2024-01-03": images[4:5],
              "unpartitioned": images[5:6]}
    src = tmp_path / "in"
    for part, files in layout.items():
        (src / part).mkdir(parents=True)
        for f in files:
            (src / part / f.name).symlink_to(f)
    assert date_partitions(str(src), "2024-01-01", "2024-01-02") == ["dt=2024-01-01", "dt=2024-01-02"]

    out = tmp_path / "out"
    argv = ["backfill", "--input", str(src), "--output", str(out), "--start", "2024-01-01", "--end", "2024-01-02",
            "--model_dir", str(PICODET_ONNX), "--threshold", "0.3", "--no-progress"]
    assert cli_main(argv) == 0
    rows = read_table(str(out / "images")).to_pylist()
    assert sorted((r["dt"], r["image_uri"].rsplit("/", 1)[-1]) for r in rows) == sorted(
        (part[3:], f.name) for part in ("dt=2024-01-01", "dt=2024-01-02") for f in layout[part])
    objects = read_table(str(out / "objects"))
    assert set(objects.column("dt").to_pylist()) == {"2024-01-01", "2024-01-02"}
    assert '"annotated"' in capsys.readouterr().out  # the CLI prints the backfill summary

    from pxflow.flows.backfill import backfill
    from pxflow.flows.options import AnnotateOptions

    options = AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=0.3)
    again = backfill(input=str(src), output=str(out), start="2024-01-01", end="2024-01-02", options=options)
    assert again["unchanged"] == ["dt=2024-01-01", "dt=2024-01-02"] and again["annotated"] == []
    assert read_table(str(out / "images")).num_rows == 4

    # a late file lands in the old partition: the next backfill annotates just that file
    late = images[10]
    (src / "dt=2024-01-01" / late.name).symlink_to(late)
    third = backfill(input=str(src), output=str(out), start="2024-01-01", end="2024-01-02", options=options)
    assert third["annotated"] == ["dt=2024-01-01"] and third["unchanged"] == ["dt=2024-01-02"]
    assert [p["inferred"] for p in third["per_partition"]] == [1, 0]
    rows = read_table(str(out / "images")).to_pylist()
    assert len(rows) == 5 and {(r["dt"], r["image_uri"].rsplit("/", 1)[-1]) for r in rows} >= {("2024-01-01", late.name)}


def _partitioned(src, layout: dict[str, list]) -> None:
    for part, files in layout.items():
        (src / part).mkdir(parents=True)
        for f in files:
            (src / part / f.name).symlink_to(f)


def _summary(stdout: str) -> dict:
    """The backfill summary the CLI prints (indented JSON, last on stdout)."""
    start = 0 if stdout.startswith("{") else stdout.index("\n{") + 1
    return json.loads(stdout[start:])


def test_cli_backfill_rerun_on_its_own_output_annotates_just_the_late_file(prefect_server, tmp_path, shared_dir, capsys):
    """The late-file use case through the command a user runs: the rerun's preflight checks the range's dt partition
    against the dt-partitioned tables (it used to check "no partition" and exit 2)."""
    images = sorted((COCO_MINI / "images").iterdir())
    src, out = tmp_path / "in", tmp_path / "out"
    _partitioned(src, {"dt=2024-01-01": images[0:1], "dt=2024-01-02": images[1:2]})
    args = ["--input", str(src), "--output", str(out), "--start", "2024-01-01", "--end", "2024-01-02",
            "--model-dir", str(PICODET_ONNX), "--threshold", "0.3", "--no-progress"]
    assert cli_main(["backfill", *args]) == 0
    capsys.readouterr()
    late = images[2]
    (src / "dt=2024-01-02" / late.name).symlink_to(late)

    rerun = pxflow("backfill", *args, api_url=prefect_server)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = _summary(rerun.stdout)
    assert [(p["partition"], p["inferred"], p["unchanged"]) for p in summary["per_partition"]] == [
        ("dt=2024-01-01", 0, 1), ("dt=2024-01-02", 1, 1)]
    rows = read_table(str(out / "images")).to_pylist()
    assert sorted((r["dt"], r["image_uri"]) for r in rows) == [
        ("2024-01-01", os.path.realpath(src / "dt=2024-01-01" / images[0].name)),  # identities: the links' targets
        ("2024-01-02", os.path.realpath(src / "dt=2024-01-02" / images[1].name)),
        ("2024-01-02", os.path.realpath(src / "dt=2024-01-02" / late.name))]
    late_row = next(r for r in rows if r["image_uri"].endswith(late.name))
    objects = read_table(str(out / "objects")).to_pylist()
    assert sum(o["image_uri"] == late_row["image_uri"] for o in objects) == late_row["num_objects"] > 0


def test_an_empty_partition_folder_in_the_range_is_a_complete_empty_partition(prefect_server, tmp_path, shared_dir,
                                                                             capsys):
    images = sorted((COCO_MINI / "images").iterdir())
    src, out = tmp_path / "in", tmp_path / "out"
    _partitioned(src, {"dt=2024-01-01": images[0:1], "dt=2024-01-02": []})
    argv = ["backfill", "--input", str(src), "--output", str(out), "--start", "2024-01-01", "--end", "2024-01-02",
            "--model-dir", str(PICODET_ONNX), "--threshold", "0.3", "--no-progress"]
    assert cli_main(argv) == 0  # it exited 1 "rerun to resume", which no rerun could ever do
    summary = _summary(capsys.readouterr().out)
    assert summary["complete"] and summary["failed"] == []
    assert summary["empty"] == ["dt=2024-01-02"] and summary["annotated"] == ["dt=2024-01-01"]
    assert summary["unchanged"] == []
    assert [r["dt"] for r in read_table(str(out / "images")).to_pylist()] == ["2024-01-01"]
