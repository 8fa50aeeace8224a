"""The storage layer against a real S3 server (weed mini) and the local filesystem."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pxflow.pipelines.io import storage
from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.manifest import iter_input_uris, iter_manifest


def put(uri: str, data: bytes = b"x") -> None:
    storage.write_bytes(uri, data)


def test_s3_listing_streams_sorted_pages_with_prefix_and_suffix_filters(s3_server):
    root = s3_server.unique_prefix("listing")
    names = [f"img{i:02d}.jpg" for i in range(7)] + ["notes.txt", "sub/img99.PNG", ".hidden.jpg"]
    for name in reversed(names):
        put(f"{root}/{name}")
    put(f"{root}-sibling/img00.jpg")  # same string prefix, different "directory": must not be listed

    listing = storage.list_objects(root, (".jpg", ".png"), page_size=3)
    first = next(listing)  # a generator: the first page is served before later pages are fetched
    rest = list(listing)
    uris = [first.uri] + [i.uri for i in rest]
    expected = [f"{root}/img{i:02d}.jpg" for i in range(7)] + [f"{root}/sub/img99.PNG"]
    assert uris == expected
    assert all(i.size == 1 and i.etag for i in [first, *rest])
    assert list(storage.list_children(root)) == ["sub"]


def test_s3_read_object_reports_size_etag_and_error_vocabulary(s3_server):
    root = s3_server.unique_prefix("read")
    put(f"{root}/a.bin", b"hello world")
    data, info = storage.read_object(f"{root}/a.bin")
    assert data == b"hello world" and info.size == 11
    assert info.etag == storage.stat(f"{root}/a.bin").etag

    with pytest.raises(InputError) as missing:
        storage.read_bytes(f"{root}/missing.jpg")
    assert missing.value.error_type == "not_found" and not missing.value.transient
    with pytest.raises(InputError) as no_bucket:
        storage.read_bytes("s3://no-such-bucket-pxflow/a.jpg")
    assert no_bucket.value.error_type == "not_found"
    assert storage.stat(f"{root}/missing.jpg") is None


def test_s3_bad_credentials_are_a_permanent_download_failure(s3_server):
    root = s3_server.unique_prefix("creds")
    put(f"{root}/a.bin", b"1")
    wrong = storage.Storage(s3={"access_key_id": "wrong", "secret_access_key": "wrong"})
    with pytest.raises(InputError) as denied:
        wrong.read_bytes(f"{root}/a.bin")
    assert denied.value.error_type == "download_failed"
    assert not denied.value.transient  # retrying cannot fix credentials
    right = storage.Storage(s3={"access_key_id": s3_server.access_key, "secret_access_key": s3_server.secret_key})
    assert right.read_bytes(f"{root}/a.bin") == b"1"


def test_unreachable_endpoint_is_a_transient_download_failure(s3_server, monkeypatch):
    monkeypatch.setattr(storage, "S3_MAX_ATTEMPTS", 1)
    monkeypatch.setattr(storage, "S3_READ_ATTEMPTS", 2)
    from tests.support.s3_server import free_port

    down_storage = storage.Storage(s3={"endpoint_url": f"http://127.0.0.1:{free_port()}"})  # nothing listens there
    with pytest.raises(InputError) as down:
        down_storage.read_bytes("s3://pxflow-test/a.jpg")
    assert down.value.error_type == "download_failed" and down.value.transient
    assert "after retries" in down.value.message


@pytest.mark.parametrize("where", ["s3", "local"])
def test_move_publishes_whole_object_and_removes_the_staging_key(s3_server, tmp_path, where):
    root = s3_server.unique_prefix("move") if where == "s3" else str(tmp_path)
    src, dst = f"{root}/_tmp/part.parquet", f"{root}/objects/part.parquet"
    put(dst, b"old")
    put(src, b"new" * 1000)
    storage.move(src, dst)
    assert storage.read_bytes(dst) == b"new" * 1000
    assert not storage.exists(src)
    with pytest.raises(ValueError):
        storage.move(src, "s3://other-bucket/x" if where == "local" else str(tmp_path / "x"))


def test_arrow_filesystem_reads_what_storage_wrote(s3_server):
    root = s3_server.unique_prefix("arrow")
    table = pa.table({"uri": ["a.jpg", "b.jpg"], "n": [1, 2]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    put(f"{root}/t/part-0.parquet", sink.getvalue().to_pybytes())
    fs, path = storage.arrow_filesystem(f"{root}/t")
    import pyarrow.dataset as ds

    assert ds.dataset(path, filesystem=fs).to_table().equals(table)


def test_manifests_in_every_format_resolve_relative_entries(s3_server, tmp_path):
    root = s3_server.unique_prefix("manifest")
    expected = [f"{root}/imgs/a.jpg", f"{root}/imgs/b.png", "s3://elsewhere/c.jpg"]
    put(f"{root}/list.txt", b"# comment\nimgs/a.jpg\n\nimgs/b.png\ns3://elsewhere/c.jpg\n")
    put(f"{root}/list.csv", b"id,uri\n1,imgs/a.jpg\n2,imgs/b.png\n3,s3://elsewhere/c.jpg\n")
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": [1, 2, 3], "image_uri": ["imgs/a.jpg", "imgs/b.png", "s3://elsewhere/c.jpg"]}), sink)
    put(f"{root}/list.parquet", sink.getvalue().to_pybytes())
    for name in ("list.txt", "list.csv", "list.parquet"):
        assert list(iter_manifest(f"{root}/{name}")) == expected, name
        assert list(iter_input_uris(f"{root}/{name}")) == expected, name

    local = tmp_path / "m.csv"
    local.write_text("a.jpg\nb.jpg\n")  # no header: first column, first row is data
    assert list(iter_input_uris(str(local))) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]


def test_local_listing_is_sorted_recursive_and_filtered(tmp_path):
    for rel in ["b/2.jpg", "a/1.JPG", "a/skip.txt", "c.png", ".hid/x.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    uris = [i.uri for i in storage.list_objects(str(tmp_path), (".jpg", ".png"))]
    assert uris == [str(tmp_path / p) for p in ("a/1.JPG", "b/2.jpg", "c.png")]
    assert list(storage.list_children(str(tmp_path))) == ["a", "b"]
    # streaming: taking two items does not need the rest
    assert len(list(itertools.islice(storage.list_objects(str(tmp_path)), 2))) == 2
