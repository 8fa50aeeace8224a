"""The ``backfill`` flow over Hive date partitions, on the real Prefect server."""

from __future__ import annotations

import datetime as dt

import pytest

from pxflow.flows.backfill import date_partitions, parse_day
from pxflow.flows.cli import main as cli_main
from tests.support.annotate_helpers import read_table
from tests.conftest import COCO_MINI, PICODET_ONNX


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
