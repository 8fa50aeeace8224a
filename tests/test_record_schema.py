"""A result class owns the schema of its records: extra columns evolve the ``objects`` table, undeclared keys fail.

The toy classifier (``tests/support/toy_classifier``) is extended here twice, registered from this module
as a plug-in would be: ``toy_top2`` declares a ``top2_label`` column; ``toy_bad_key`` writes that key
without declaring it. Expected labels come from the toy's graph (a black image is ``dark`` first and
``bright`` second, a white one the other way round), not from the code under test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pytest
import yaml

from pxflow.pipelines.io.storage import Storage
from pxflow.pipelines.registry import register_pipeline
from pxflow.pipelines.results import BaseResult, ErrorResult
from pxflow.pipelines.results.records import RECORD_KEYS
from pxflow.tasks.lake import Lake, SchemaConflictError, app_id
from pxflow.tasks.rows import OBJECTS_SCHEMA, RecordSchemaError, RowBuilder, objects_schema
from tests.support.annotate_helpers import read_table
from tests.support.toy_classifier.pipeline import ClassResult, ToyClassifierPipeline
from tests.test_design import _toy

TOP2 = pa.field("top2_label", pa.string())


class Top2Result(ClassResult):
    """The best class and the runner-up: one record per image with a column the base schema lacks."""

    @classmethod
    def record_schema(cls) -> pa.Schema:
        return super().record_schema().append(TOP2)

    def object_records(self) -> list[dict[str, Any]]:
        first = super().object_records()[0]
        return [{**first, "top2_label": self["label_names"][1]}]


class UndeclaredKeyResult(ClassResult):
    """Writes ``top2_label`` without declaring it: before, the key was dropped while the row said ``ok``."""

    def object_records(self) -> list[dict[str, Any]]:
        return [{**super().object_records()[0], "top2_label": self["label_names"][1]}]


class _Rewrapped(ToyClassifierPipeline):
    def run_batch(self, batch: Sequence[Any], **kwargs: Any) -> list[ClassResult]:
        return [self.result_class(dict(r), r.image, r.index) for r in super().run_batch(batch, **kwargs)]


class Top2Pipeline(_Rewrapped):
    pipeline_name = "toy_top2"
    result_class = Top2Result


class UndeclaredKeyPipeline(_Rewrapped):
    pipeline_name = "toy_bad_key"
    result_class = UndeclaredKeyResult


register_pipeline("toy_top2", f"{__name__}:Top2Pipeline")
register_pipeline("toy_bad_key", f"{__name__}:UndeclaredKeyPipeline")


def _config(tmp_path: Path, name: str) -> str:
    """The toy's YAML under another pipeline name, with both classes scored (``topk: 2``)."""
    import tests.support.toy_classifier as toy

    config = yaml.safe_load(Path(toy.CONFIG).read_text())
    config["pipeline_name"] = name
    config["SubModules"]["ImageClassification"]["topk"] = 2
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


# -- the schema a result class declares ---------------------------------------------------------
def test_the_base_fragment_is_the_documented_record_columns():
    assert tuple(BaseResult.record_schema().names) == RECORD_KEYS
    assert objects_schema(Top2Result).names == OBJECTS_SCHEMA.names + ["top2_label"]


def test_a_fragment_must_extend_the_base_and_not_redefine_shared_columns():
    class Retyped(BaseResult):
        @classmethod
        def record_schema(cls):
            base = super().record_schema()
            return base.set(base.get_field_index("score"), pa.field("score", pa.string()))

    class Shadowing(BaseResult):
        @classmethod
        def record_schema(cls):
            return super().record_schema().append(pa.field("run_key", pa.string()))

    with pytest.raises(RecordSchemaError, match=r"Retyped.record_schema\(\) must extend BaseResult.record_schema\(\)"):
        objects_schema(Retyped)
    with pytest.raises(RecordSchemaError, match=r"Shadowing.record_schema\(\) declares shared column\(s\) \['run_key'\]"):
        objects_schema(Shadowing)


def _result(cls: type[ClassResult], labels=("dark", "bright")) -> ClassResult:
    return cls({"input_path": "a.png", "class_ids": [0, 1], "scores": [0.9, 0.1], "label_names": list(labels)})


def test_an_undeclared_record_key_fails_naming_the_key_the_class_and_the_columns():
    builder = RowBuilder("run", "toy_bad_key", "Toy", "sha", "shard", result_class=UndeclaredKeyResult)
    with pytest.raises(RecordSchemaError) as caught:
        builder.add("a.png", _result(UndeclaredKeyResult), {})
    message = str(caught.value)
    assert "['top2_label']" in message and "UndeclaredKeyResult.record_schema()" in message
    assert "declared columns: ['cls_id', 'label', 'score', 'x1'," in message and "'prompt']" in message
    assert builder.objects == [] and builder.images == []
    # a failed input has no records: its error row is built as before
    assert builder.add("b.png", ErrorResult("b.png", "decode_failed", "bad"), {})["status"] == "error"


def test_a_value_its_column_cannot_hold_fails_naming_the_column():
    class WrongType(Top2Result):
        def object_records(self):
            return [{**super().object_records()[0], "score": "high"}]

    class Fraction(Top2Result):
        def object_records(self):
            return [{**super().object_records()[0], "cls_id": 1.5}]  # pyarrow alone would store 1

    builder = RowBuilder("run", "toy_top2", "Toy", "sha", "shard", result_class=WrongType)
    builder.add("a.png", _result(WrongType), {})
    with pytest.raises(RecordSchemaError, match=r"declares 'score' as float; object_records\(\) gave 'high' \(str\)"):
        builder.tables()
    with pytest.raises(RecordSchemaError, match=r"declares 'cls_id' as int32; object_records\(\) gave 1.5"):
        RowBuilder("run", "toy_top2", "Toy", "sha", "shard", result_class=Fraction).add("a.png", _result(Fraction), {})


# -- the objects table evolves ------------------------------------------------------------------
def _shard(lake: Lake, shard: str, uris: list[str], cls: type[ClassResult], partition: str | None = None) -> None:
    builder = RowBuilder("key", "toy", "Toy", "sha", shard, result_class=cls)
    for uri in uris:
        builder.add(uri, _result(cls), {"etag": "e"})
    lake.commit_shard("key", shard, partition, uris, *builder.tables())


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path) -> str:
    """An output root on the local disk, or on the real S3 server (Delta commits by conditional put there)."""
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue("s3_server").unique_prefix("evolve")


@pytest.mark.parametrize("partition", [None, "dt=2024-01-01"])
def test_a_new_column_merges_into_the_table_in_the_shards_one_commit(output, partition):
    lake = Lake(output, Storage())
    _shard(lake, "s1", ["/in/old.png"], ClassResult, partition)
    before = lake.version("objects")
    _shard(lake, "s2", ["/in/new.png"], Top2Result, partition)
    assert lake.version("objects") == before + 1  # the schema change is part of the shard's commit
    _shard(lake, "s2", ["/in/new.png"], Top2Result, partition)  # a retried shard replaces its rows
    _shard(lake, "s3", ["/in/later.png"], ClassResult, partition)  # a pipeline without the column still writes
    rows = sorted((r["image_uri"], r["object_index"], r["label"], r["top2_label"]) for r in lake.read("objects").to_pylist())
    assert rows == [("/in/later.png", 0, "dark", None), ("/in/later.png", 1, "bright", None),  # one row per class
                    ("/in/new.png", 0, "dark", "bright"),  # one row per image, with its runner-up
                    ("/in/old.png", 0, "dark", None), ("/in/old.png", 1, "bright", None)]
    assert lake.open("objects").transaction_version(app_id("key", "s2")) == 1
    assert lake.read("objects", columns=["image_uri", "label"]).num_rows == 5  # readers of the base columns


def test_shards_racing_to_add_the_column_all_land_without_a_shard_error(tmp_path):
    """The first run of an extended pipeline into an old table: every shard in flight brings the schema change."""
    import threading

    lake, shards = Lake(str(tmp_path / "out"), Storage()), 5
    _shard(lake, "s0", ["/in/old.png"], ClassResult)
    barrier, errors = threading.Barrier(shards), []

    def commit(i: int) -> None:
        barrier.wait()
        try:
            _shard(lake, f"s{i + 1}", [f"/in/{i}.png"], Top2Result)
        except Exception as exc:  # what Prefect would retry: the whole shard
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(shards)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    rows = lake.read("objects", columns=["image_uri", "top2_label"]).to_pylist()
    assert sorted((r["image_uri"], r["top2_label"]) for r in rows if r["image_uri"] != "/in/old.png") == [
        (f"/in/{i}.png", "bright") for i in range(shards)]


def test_a_replace_swap_of_staged_rows_with_a_new_column_evolves_the_table(tmp_path):
    """``--replace`` stages a run's rows in a table of their own, then streams them into the output's tables."""
    from pxflow.tasks.maintenance import staging_for, swap_in_staging

    lake = Lake(str(tmp_path / "out"), Storage())
    _shard(lake, "s1", ["/in/a.png"], ClassResult)
    staging = Lake(staging_for(lake.output, "run1"), Storage())
    _shard(staging, "s1", ["/in/a.png"], Top2Result)
    swap_in_staging(lake, staging, "key", None)
    rows = lake.read("objects").to_pylist()
    assert [(r["image_uri"], r["label"], r["top2_label"]) for r in rows] == [("/in/a.png", "dark", "bright")]


def test_a_column_that_changes_type_is_refused_and_nothing_is_committed(tmp_path):
    class Top2AsInt(ClassResult):
        @classmethod
        def record_schema(cls):
            return super().record_schema().append(pa.field("top2_label", pa.int32()))

        def object_records(self):
            return [{**super().object_records()[0], "top2_label": 1}]

    lake = Lake(str(tmp_path / "out"), Storage())
    _shard(lake, "s1", ["/in/a.png"], Top2Result)
    versions = (lake.version("objects"), lake.version("images"))
    with pytest.raises(SchemaConflictError, match=r"column 'top2_label' is string in the table and integer"):
        _shard(lake, "s2", ["/in/b.png"], Top2AsInt)
    assert (lake.version("objects"), lake.version("images")) == versions
    assert lake.read("objects").column("top2_label").to_pylist() == ["bright"]  # a.png's only row


# -- through annotate ---------------------------------------------------------------------------
def test_annotate_with_an_extended_result_class_evolves_the_existing_table(prefect_server, tmp_path):
    from pxflow.flows.annotate import annotate
    from pxflow.flows.options import AnnotateOptions

    toy, model, images = _toy(tmp_path)
    out = str(tmp_path / "out")
    plain = annotate(input=str(images), output=out, options=AnnotateOptions(pipeline=toy.CONFIG, model_dir=model))
    extended = annotate(input=str(images), output=out,
                        options=AnnotateOptions(pipeline=_config(tmp_path, "toy_top2"), model_dir=model))
    assert plain["complete"] and extended["complete"] and plain["run_key"] != extended["run_key"]
    objects = read_table(str(tmp_path / "out" / "objects")).to_pylist()
    got = sorted((r["pipeline"], Path(r["image_uri"]).name, r["label"], r["top2_label"]) for r in objects)
    assert got == [("toy_classifier", "black.png", "dark", None), ("toy_classifier", "white.png", "bright", None),
                   ("toy_top2", "black.png", "dark", "bright"), ("toy_top2", "white.png", "bright", "dark")]
    from pxflow.flows.evaluate import load_rows

    for run in (plain, extended):  # evaluation's reader selects its columns from the wider table
        _, rows, pipeline = load_rows(Lake(out, Storage()), run["run_key"])
        assert pipeline == run["pipeline"] and sorted(r["label"] for r in rows) == ["bright", "dark"]


def test_annotate_fails_on_an_undeclared_record_key_and_commits_nothing_of_it(prefect_server, tmp_path, capsys):
    from pxflow.flows.cli import main as cli_main

    toy, model, images = _toy(tmp_path)
    (images / "broken.jpg").unlink()
    out = tmp_path / "out"
    args = ["annotate", "--input", str(images), "--output", str(out), "--model-dir", model, "--no-progress"]
    assert cli_main([*args, "--pipeline", toy.CONFIG]) == 0
    capsys.readouterr()
    assert cli_main([*args, "--pipeline", _config(tmp_path, "toy_bad_key")]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("pxflow annotate: ") and "RecordSchemaError: UndeclaredKeyResult.object_records() gave " \
        "key(s) ['top2_label'] outside UndeclaredKeyResult.record_schema(); declared columns: ['cls_id', 'label'," in last
    for table in ("objects", "images"):
        rows = read_table(str(out / table))
        assert set(rows.column("pipeline").to_pylist()) == {"toy_classifier"}, table
    assert "top2_label" not in read_table(str(out / "objects")).column_names
