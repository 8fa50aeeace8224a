"""S3 settings from a Prefect Secret block, with no AWS variables in the environment."""

from __future__ import annotations

import json
import os

import pytest

from pxflow.pipelines.io import storage
from tests.support.annotate_helpers import read_table
from tests.conftest import COCO_MINI, PICODET_ONNX

AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


@pytest.fixture
def no_aws_env(monkeypatch):
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    yield  # S3 settings live in Storage objects, not in the process: nothing to restore


def test_annotate_reads_s3_through_a_secret_block(s3_server, prefect_server, shared_dir, tmp_path, no_aws_env):
    from prefect.blocks.system import Secret

    from pxflow.flows.annotate import annotate
    from pxflow.flows.options import AnnotateOptions

    prefix = s3_server.unique_prefix("block-input")
    images = sorted((COCO_MINI / "images").glob("*.jpg"))[:3]
    settings = {"endpoint_url": s3_server.endpoint, "region": "us-east-1",
                "access_key_id": s3_server.access_key, "secret_access_key": s3_server.secret_key}
    explicit = storage.Storage(s3=settings)
    for path in images:
        explicit.upload_file(str(path), f"{prefix}/{path.name}")
    with pytest.raises(Exception):  # without the block there are no credentials or endpoint for this server
        storage.read_bytes(f"{prefix}/{images[0].name}")

    Secret(value=json.dumps(settings)).save("pxflow-test-s3", overwrite=True)
    options = AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=0.5, s3_block="pxflow-test-s3")
    result = annotate(input=prefix, output=str(tmp_path / "out"), options=options)
    assert result["complete"] and result["rows_images"] == 3
    rows = read_table(str(tmp_path / "out" / "images")).to_pylist()
    assert sorted(r["image_uri"] for r in rows) == [f"{prefix}/{p.name}" for p in images]
    assert {r["status"] for r in rows} == {"ok"}

    # the secret key never reaches Prefect's database: not as a parameter, task input, log line or artifact
    # (the Secret block itself is stored encrypted)
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    db_path = PREFECT_API_DATABASE_CONNECTION_URL.value().split("///", 1)[-1]
    import sqlite3

    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA wal_checkpoint(FULL)")
    raw = b"".join(open(p, "rb").read() for p in (db_path, db_path + "-wal") if os.path.exists(p))
    assert s3_server.secret_key.encode() not in raw
    assert b"pxflow-test-s3" in raw  # the block name is what travels (the search above does look at the data)
