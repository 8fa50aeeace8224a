"""Every store operation through ``Storage`` objects: local files, a real S3 server (weed mini), real HTTP.

Settings are per ``Storage``: two of them with different S3 credentials work
side by side in one process, and unknown URI schemes are refused by name.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import os
import pickle
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pxflow.pipelines.io import storage, stores
from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.storage import ObjectInfo, Storage, UnsupportedSchemeError
from pxflow.pipelines.io.stores import HttpStore, LocalStore, S3Settings, S3Store, Store, UnsupportedOperationError
from pxflow.pipelines.io.uri import ParsedURI, join_uri, parse_uri

AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")


def explicit_s3(server) -> Storage:
    return Storage(s3={"endpoint_url": server.endpoint, "region": "us-east-1",
                       "access_key_id": server.access_key, "secret_access_key": server.secret_key})


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path, s3_server):
    """(Storage, root URI): local files through a plain Storage, S3 through explicit settings."""
    if request.param == "local":
        return Storage(), str(tmp_path / "root")
    return explicit_s3(s3_server), s3_server.unique_prefix("stores")


def test_every_operation_through_storage(where, tmp_path):
    st, root = where
    assert st.stat(f"{root}/a.bin") is None and not st.exists(f"{root}/a.bin")
    st.write_bytes(f"{root}/a.bin", b"hello world")
    data, info = st.read_object(f"{root}/a.bin")
    assert data == b"hello world" and info.size == 11 and info.uri == f"{root}/a.bin" and info.etag
    assert st.read_bytes(f"{root}/a.bin") == b"hello world"
    assert st.stat(f"{root}/a.bin") == ObjectInfo(f"{root}/a.bin", 11, info.etag)
    assert st.exists(f"{root}/a.bin")
    assert st.is_dir(root) and not st.is_dir(f"{root}/a.bin") and not st.is_dir(f"{root}/nothing")

    for rel in ["b/2.jpg", "a/1.JPG", "a/skip.txt", "c.png", ".hid/x.jpg", "a/.hidden.jpg"]:
        st.write_bytes(f"{root}/{rel}", rel.encode())
    listed = list(st.list_objects(root, (".jpg", ".png")))
    assert [i.uri for i in listed] == [f"{root}/a/1.JPG", f"{root}/b/2.jpg", f"{root}/c.png"]
    assert [i.size for i in listed] == [len(b"a/1.JPG"), len(b"b/2.jpg"), len(b"c.png")]
    assert all(i.etag for i in listed)
    everything = [i.uri for i in st.list_objects(root)]
    assert everything == [f"{root}/{p}" for p in ("a/1.JPG", "a/skip.txt", "a.bin", "b/2.jpg", "c.png")]
    # an object named exactly is listed whatever its suffix
    assert [i.uri for i in st.list_objects(f"{root}/a/skip.txt", (".jpg",))] == [f"{root}/a/skip.txt"]
    assert list(st.list_objects(f"{root}/missing-dir")) == []
    assert list(st.list_children(root)) == ["a", "b"]

    local = tmp_path / "upload.bin"
    local.write_bytes(b"u" * 5000)
    st.upload_file(str(local), f"{root}/up/u.bin")
    st.download_file(f"{root}/up/u.bin", str(tmp_path / "down" / "u.bin"))
    assert (tmp_path / "down" / "u.bin").read_bytes() == b"u" * 5000
    with pytest.raises(InputError) as missing:
        st.download_file(f"{root}/up/none.bin", str(tmp_path / "down" / "none.bin"))
    assert missing.value.error_type == "not_found"
    assert not (tmp_path / "down" / "none.bin").exists()

    st.move(f"{root}/up/u.bin", f"{root}/moved/u.bin")
    assert st.read_bytes(f"{root}/moved/u.bin") == b"u" * 5000 and not st.exists(f"{root}/up/u.bin")
    st.delete(f"{root}/moved/u.bin")
    st.delete(f"{root}/moved/u.bin")  # idempotent
    assert not st.exists(f"{root}/moved/u.bin")

    table = pa.table({"uri": ["x.jpg", "y.jpg"], "n": [1, 2]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    st.write_bytes(f"{root}/t/part-0.parquet", sink.getvalue().to_pybytes())
    fs, path = st.arrow_filesystem(f"{root}/t/part-0.parquet")
    assert pq.read_table(path, filesystem=fs).equals(table)

    with pytest.raises(InputError) as gone:
        st.read_object(f"{root}/missing.jpg")
    assert gone.value.error_type == "not_found" and not gone.value.transient


def test_s3_etag_is_what_the_server_computed(s3_server):
    st = explicit_s3(s3_server)
    root = s3_server.unique_prefix("etag")
    st.write_bytes(f"{root}/x.bin", b"some bytes")
    assert st.read_object(f"{root}/x.bin")[1].etag == hashlib.md5(b"some bytes").hexdigest()
    assert [i.etag for i in st.list_objects(root)] == [hashlib.md5(b"some bytes").hexdigest()]


def test_two_storages_with_different_s3_settings_work_side_by_side(s3_server, monkeypatch):
    for name in AWS_VARS:  # nothing from the environment: each Storage carries all its settings
        monkeypatch.delenv(name, raising=False)
    good = explicit_s3(s3_server)
    bad = Storage(s3=S3Settings(endpoint_url=s3_server.endpoint, region="us-east-1",
                                access_key_id="wrong", secret_access_key="wrong"))
    root = s3_server.unique_prefix("side-by-side")
    good.write_bytes(f"{root}/a.bin", b"1")
    for _ in range(2):  # interleaved: neither call changes what the other sees
        with pytest.raises(InputError) as denied:
            bad.read_bytes(f"{root}/a.bin")
        assert denied.value.error_type == "download_failed" and not denied.value.transient
        assert "AccessDenied" in denied.value.message or "InvalidAccessKeyId" in denied.value.message
        assert good.read_bytes(f"{root}/a.bin") == b"1"

    results: dict[str, object] = {}

    def run(name: str, st: Storage) -> None:
        try:
            results[name] = st.read_bytes(f"{root}/a.bin")
        except InputError as exc:
            results[name] = exc.error_type

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("good", good), ("bad", bad))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"good": b"1", "bad": "download_failed"}
    # and the default storage (no AWS environment now) reaches neither
    with pytest.raises(Exception):
        storage.read_bytes(f"{root}/a.bin")


def test_default_storage_follows_the_environment(s3_server, monkeypatch):
    from tests.support.s3_server import free_port

    root = s3_server.unique_prefix("default-env")
    storage.write_bytes(f"{root}/a.bin", b"env")  # the fixture's AWS_* variables
    before = storage.default_storage()
    assert storage.default_storage() is before  # cached while the environment stays the same
    with monkeypatch.context() as m:
        m.setattr(storage, "S3_MAX_ATTEMPTS", 1)
        m.setattr(storage, "S3_READ_ATTEMPTS", 1)
        m.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
        assert storage.default_storage() is not before
        with pytest.raises(InputError) as down:
            storage.read_bytes(f"{root}/a.bin")
        assert down.value.error_type == "download_failed" and down.value.transient
    assert storage.read_bytes(f"{root}/a.bin") == b"env"


@pytest.mark.parametrize("uri", ["gs://bucket/x.jpg", "s3a://b/k", "hdfs://nn/path", "GS://B/K"])
def test_unknown_schemes_are_refused_by_name(uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsupportedSchemeError) as parsed:
        parse_uri(uri)
    message = str(parsed.value)
    assert uri in message
    for scheme in ("file://", "s3://", "http://", "https://"):
        assert scheme in message
    assert isinstance(parsed.value, ValueError)
    with pytest.raises(UnsupportedSchemeError, match="s3://"):
        Storage().write_bytes(uri, b"x")
    with pytest.raises(UnsupportedSchemeError):
        join_uri(uri, "part.parquet")
    with pytest.raises(UnsupportedSchemeError):
        list(storage.list_objects(uri))
    assert list(tmp_path.iterdir()) == []  # nothing written locally (no folder called "gs:")


def test_plain_paths_and_file_uris_are_the_same_local_file(tmp_path):
    target = tmp_path / "dir with space" / "f.bin"
    Storage().write_bytes(f"file://{target}", b"via file uri")
    assert target.read_bytes() == b"via file uri"
    assert parse_uri(f"file://{target}") == ParsedURI("file", "", str(target))
    assert parse_uri(str(target)) == ParsedURI("file", "", str(target))
    assert parse_uri("rel/x.jpg") == ParsedURI("file", "", os.path.join(os.getcwd(), "rel", "x.jpg"))
    assert parse_uri("s3://bkt/k/x.jpg") == ParsedURI("s3", "bkt", "k/x.jpg")
    assert Storage().read_bytes(str(target)) == b"via file uri"
    with pytest.raises(ValueError):
        Storage().move(str(target), "s3://other-bucket/x")


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server over a temporary directory."""
    (tmp_path / "web").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "web"))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path / "web", f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_store_reads_and_stats_and_refuses_writes(http_root):
    folder, base = http_root
    (folder / "a.bin").write_bytes(b"over http")
    st = Storage()
    data, info = st.read_object(f"{base}/a.bin")
    assert data == b"over http" and info.size == 9 and info.uri == f"{base}/a.bin"
    assert st.stat(f"{base}/a.bin").size == 9
    assert st.stat(f"{base}/none.bin") is None and not st.exists(f"{base}/none.bin")
    with pytest.raises(InputError) as missing:
        st.read_bytes(f"{base}/none.bin")
    assert missing.value.error_type == "not_found"
    for call in (lambda: st.write_bytes(f"{base}/w.bin", b"x"), lambda: st.delete(f"{base}/a.bin"),
                 lambda: list(st.list_objects(base))):
        with pytest.raises(UnsupportedOperationError, match="read-only"):
            call()
    assert isinstance(st.store_for(base), HttpStore) and st.store_for(base) is st.store_for("https://x/y")


def test_register_store_adds_a_scheme(monkeypatch):
    monkeypatch.setattr(stores, "_registry", dict(stores._registry))  # leave the real registry as it was

    class MemoryStore(Store):
        schemes = ("mem",)
        objects: dict[str, bytes] = {}

        @classmethod
        def parse(cls, uri):
            bucket, _, key = uri.split("://", 1)[1].partition("/")
            return ParsedURI("mem", bucket, key)

        def read_object(self, uri):
            if uri not in self.objects:
                raise InputError(uri, "not_found", "no such object")
            return self.objects[uri], ObjectInfo(uri, len(self.objects[uri]))

        def write_bytes(self, uri, data):
            self.objects[uri] = data

    with pytest.raises(UnsupportedSchemeError):
        parse_uri("mem://b/k")
    stores.register_store("mem", MemoryStore)
    assert "mem" in stores.supported_schemes()
    assert parse_uri("mem://b/k") == ParsedURI("mem", "b", "k")
    st = Storage()
    st.write_bytes("mem://b/k", b"in memory")
    assert st.read_bytes("mem://b/k") == b"in memory"
    with pytest.raises(UnsupportedOperationError):
        st.delete("mem://b/k")
    with pytest.raises(TypeError):
        stores.register_store("bad", dict)  # type: ignore[arg-type]


def test_storage_pickles_without_its_clients_and_hides_secrets(s3_server):
    st = explicit_s3(s3_server)
    root = s3_server.unique_prefix("pickle")
    st.write_bytes(f"{root}/p.bin", b"p")
    copy = pickle.loads(pickle.dumps(st))
    assert copy.s3 == st.s3 and copy.read_bytes(f"{root}/p.bin") == b"p"
    assert s3_server.secret_key not in repr(st) and s3_server.secret_key not in repr(st.store_for(root))
    assert isinstance(st.store_for(root), S3Store) and isinstance(st.store_for("/tmp"), LocalStore)
    assert Storage(s3={"endpoint_url": "http://e", "unrelated": 1}).s3 == S3Settings(endpoint_url="http://e")


# ---------------------------------------------------------------- local listing robustness

def test_local_listing_survives_loops_dangling_links_and_odd_names(tmp_path, caplog):
    root = tmp_path / "tree"
    (root / "a" / "deeper").mkdir(parents=True)
    (root / "a" / "1.jpg").write_bytes(b"1")
    (root / "a" / "deeper" / "2.jpg").write_bytes(b"22")
    (root / "a" / "deeper" / "loop").symlink_to(root / "a")  # a -> deeper -> loop -> a ...
    (root / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "linked").symlink_to(root / "a" / "deeper")  # the same real directory twice: listed once
    odd = os.fsencode(str(root)) + b"/caf\xe9.jpg"  # Latin-1 name: not valid UTF-8
    with open(odd, "wb") as f:
        f.write(b"333")

    with caplog.at_level(logging.WARNING, logger="pxflow.pipelines.io.stores.local"):
        listed = list(Storage().list_objects(str(root), (".jpg",)))
    odd_name = os.fsdecode(odd)
    assert [(i.uri, i.size) for i in listed] == [
        (f"{root}/a/1.jpg", 1),
        (f"{root}/a/deeper/2.jpg", 2),
        (odd_name, 3),
        (f"{root}/dangling.jpg", -1),  # listed although unreadable: its read is its error row
    ]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "dangling.jpg" in messages and "loop" in messages and "linked" in messages
    assert Storage().read_bytes(odd_name) == b"333"
    with pytest.raises(InputError, match="dangling symbolic link") as err:
        Storage().read_bytes(f"{root}/dangling.jpg")
    assert err.value.error_type == "not_found"


def test_local_listing_skips_an_unreadable_directory(tmp_path, caplog, monkeypatch):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "x.jpg").write_bytes(b"x")
    (tmp_path / "z.jpg").write_bytes(b"z")
    os.chmod(tmp_path / "locked", 0)
    try:
        with monkeypatch.context() as m, caplog.at_level(logging.WARNING):
            if os.geteuid() == 0:  # root reads every directory: make this one refuse, as chmod 0 does for others
                from pxflow.pipelines.io.stores import local

                real_scandir = os.scandir

                def scandir(path):
                    if os.fspath(path) == str(tmp_path / "locked"):
                        raise PermissionError(13, "Permission denied", os.fspath(path))
                    return real_scandir(path)

                m.setattr(local.os, "scandir", scandir)
            listed = [i.uri for i in Storage().list_objects(str(tmp_path))]
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert listed == [str(tmp_path / "z.jpg")]
    assert "locked" in caplog.text and "Permission denied" in caplog.text
