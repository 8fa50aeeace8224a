"""Versioned PP-ShiTu indexes (<root>/<name>/vNNNNNN + CURRENT), on local disk and on a real S3 server.

The drink gallery subset (12 classes x 5 images) is embedded by the generated ShiTu
recognition model through the real flows; expected values come from the gallery files
themselves (counts, labels, uris), from hashlib/yaml/faiss reading the stored files directly,
and from earlier observations (rollback must reproduce searches seen before).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import faiss
import numpy as np
import pytest
import yaml

from pxflow.flows.cli import main as pxflow
from pxflow.pipelines.io.storage import PreconditionFailed, Storage
from pxflow.pipelines.io.uri import join_uri
from pxflow.pipelines.retrieval import IndexData, IndexFormatError, build_index
from pxflow.pipelines.retrieval.index_data import stored_ids
from pxflow.pipelines.retrieval.versions import IndexRepo, VersionError, pin_spec, resolve_index
from tests.conftest import DRINK, ROOT
from tests.support.faults import kill_env
from tests.support.shitu_models import make_pipeline, shitu_models  # noqa: F401

CLASSES, PER_CLASS = 12, 5


# ---------------------------------------------------------------- fixtures

def _drink_subset() -> list[tuple[str, str]]:
    """(relative path, label) of the first PER_CLASS images of the first CLASSES labels with enough images."""
    lines = (DRINK / "gallery" / "drink_label.txt").read_text(encoding="utf-8").splitlines()
    by_label: dict[str, list[str]] = {}
    for line in lines:
        path, label = line.split("\t", 1)
        by_label.setdefault(label.strip(), []).append(path)
    chosen = [lab for lab, paths in by_label.items() if len(paths) >= PER_CLASS][:CLASSES]
    return [(p, lab) for lab in chosen for p in by_label[lab][:PER_CLASS]]


@pytest.fixture(scope="module")
def subset(shared_dir):
    pairs = _drink_subset()
    assert len(pairs) == CLASSES * PER_CLASS
    return pairs


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """(index root, gallery folder) on local disk or on the S3 server."""
    if request.param == "local":
        return str(tmp_path / "indexes"), str(tmp_path / "gallery")
    server = request.getfixturevalue("s3_server")
    base = server.unique_prefix("versions")
    return f"{base}/indexes", f"{base}/gallery"


def put_gallery(folder: str, pairs, name: str, storage: Storage) -> str:
    """Copy the images of ``pairs`` under ``folder`` and write a label file ``name``; returns its URI."""
    for rel, _ in pairs:
        storage.write_bytes(join_uri(folder, rel), (DRINK / "gallery" / rel).read_bytes())
    uri = join_uri(folder, name)
    storage.write_bytes(uri, "".join(f"{rel}\t{lab}\n" for rel, lab in pairs).encode("utf-8"))
    return uri


@pytest.fixture(scope="module")
def config(shitu_models, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("cfg") / "shitu.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "pipeline_name": "PP-ShiTuV2",
                "SubModules": {
                    "Detection": {"model_name": "PP-ShiTuV2_det", "model_dir": shitu_models["det"]},
                    "Recognition": {"model_name": "PP-ShiTuV2_rec", "model_dir": shitu_models["rec"]},
                },
            }
        ),
        encoding="utf-8",
    )
    return str(path)


def cli_json(capfd, *args: str, expect: int = 0):
    """Run ``pxflow index ...``; stdout (file descriptor 1) must be exactly one JSON document."""
    capfd.readouterr()
    code = pxflow(["index", *args])
    out, err = capfd.readouterr()
    assert code == expect, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
    return (json.loads(out) if out.strip() else None), err


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_version_files(storage: Storage, root: str, name: str, version: str) -> dict:
    """The manifest agrees with the files as hashlib, yaml and faiss read them."""
    vdir = join_uri(root, name, version)
    manifest = json.loads(storage.read_bytes(join_uri(vdir, "manifest.json")))
    assert manifest["version"] == version and manifest["name"] == name
    for fname in ("vector.index", "id_map.yaml", "index_info.yaml", "pxflow_index.json"):
        assert manifest["files"][fname] == sha256(storage.read_bytes(join_uri(vdir, fname)))
    info = yaml.safe_load(storage.read_bytes(join_uri(vdir, "id_map.yaml")))
    assert yaml.safe_load(storage.read_bytes(join_uri(vdir, "index_info.yaml"))) == info  # the documents' name, same labels
    index = faiss.deserialize_index(np.frombuffer(storage.read_bytes(join_uri(vdir, "vector.index")), np.uint8))
    assert manifest["ntotal"] == index.ntotal
    assert manifest["live"] == len(info["id_map"])
    assert manifest["labels"] == dict(Counter(info["id_map"].values()))
    assert manifest["metric_type"] == info["metric_type"] and manifest["dim"] == index.d
    assert {c["id"] for c in manifest["consumed"]} == set(info["id_map"])
    assert manifest["next_id"] > max(info["id_map"])
    return manifest


# ---------------------------------------------------------------- conditional writes

@pytest.mark.parametrize("kind", ["local", "s3"])
def test_conditional_writes_compare_and_swap(kind, tmp_path, request):
    storage = Storage()
    uri = str(tmp_path / "ptr") if kind == "local" else request.getfixturevalue("s3_server").unique_prefix("cas") + "/ptr"
    assert storage.read_for_update(uri) == (None, None)
    first = storage.write_bytes_if(uri, b"v1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        storage.write_bytes_if(uri, b"other", if_none_match=True)
    data, etag = storage.read_for_update(uri)
    assert data == b"v1" and etag == first
    second = storage.write_bytes_if(uri, b"v2", if_match=etag)
    with pytest.raises(PreconditionFailed):
        storage.write_bytes_if(uri, b"v3", if_match=first)  # stale etag
    assert storage.read_bytes(uri) == b"v2" and storage.read_for_update(uri)[1] == second


# ---------------------------------------------------------------- the whole lifecycle through the CLI and flows

def test_build_append_remove_rollback(where, subset, config, prefect_server, capfd, tmp_path, monkeypatch):
    monkeypatch.setenv("PXFLOW_INDEX_CACHE", str(tmp_path / "cache"))
    root, gallery = where
    storage = Storage()
    base = [p for i, p in enumerate(subset) if i % PER_CLASS < 3]  # 36 images, 3 per class
    more = [p for i, p in enumerate(subset) if i % PER_CLASS >= 3]  # 24 images, 2 per class
    base_file = put_gallery(gallery, base, "base.txt", storage)
    more_file = put_gallery(gallery, more, "more.txt", storage)
    common = ["--root", root, "--name", "drinks"]

    out, _ = cli_json(capfd, "build", *common, "--pipeline", config, "--gallery", base_file, "--index_type", "Flat")
    assert out["version"] == "v000001" and out["live"] == 36 and out["labels"] == CLASSES
    assert out["features_computed"] == 36
    m1 = check_version_files(storage, root, "drinks", "v000001")
    assert sorted(c["uri"] for c in m1["consumed"]) == sorted(join_uri(gallery, p) for p, _ in base)
    assert m1["flow_run_id"] and m1["operation"] == "build" and m1["model"]["sha256"]

    out, _ = cli_json(capfd, "append", *common, "--pipeline", config, "--gallery", more_file)
    assert out["version"] == "v000002" and out["live"] == 60 and out["parent"] == "v000001"
    m2 = check_version_files(storage, root, "drinks", "v000002")
    new_ids = {c["id"] for c in m2["consumed"] if c["uri"] in {join_uri(gallery, p) for p, _ in more}}
    assert new_ids == set(range(36, 60))  # fresh ids after the build's

    v2 = IndexRepo(root, "drinks").load("v000002")
    queries = np.stack([v2.index.reconstruct(i) for i in (0, 7, 40, 55)])
    want_scores, want_ids = v2.search(queries, 5)

    out, _ = cli_json(capfd, "remove", *common, "--ids", "0,1")
    assert out["version"] == "v000003" and out["live"] == 58
    victim = subset[-1][1]  # the last class: 5 images
    out, _ = cli_json(capfd, "remove", *common, "--label", victim)
    assert out["version"] == "v000004" and out["live"] == 53
    m4 = check_version_files(storage, root, "drinks", "v000004")
    assert victim not in m4["labels"] and 0 not in {c["id"] for c in m4["consumed"]}

    # removing what is not there: a clear message, exit 2, no new version
    _, err = cli_json(capfd, "remove", *common, "--ids", "0", expect=2)
    assert "ids [0] not in the current version v000004" in err and len(err.strip().splitlines()) == 1
    _, err = cli_json(capfd, "remove", *common, "--label", "no such drink", expect=2)
    assert "no such drink" in err
    assert IndexRepo(root, "drinks").current_version() == "v000004"

    out, _ = cli_json(capfd, "rollback", *common, "--version", "v000002")
    assert out["version"] == "v000005" and out["live"] == 60 and out["operation"] == "rollback"
    m5 = check_version_files(storage, root, "drinks", "v000005")
    assert m5["next_id"] == 60  # ids stay never-reused
    got_scores, got_ids = IndexRepo(root, "drinks").load().search(queries, 5)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)

    listing, _ = cli_json(capfd, "list", *common, "--json")
    assert [r["version"] for r in listing] == ["v000001", "v000002", "v000003", "v000004", "v000005"]
    assert [r["operation"] for r in listing] == ["build", "append", "remove", "remove", "rollback"]
    assert [r["parent"] for r in listing] == [None, "v000001", "v000002", "v000003", "v000004"]
    assert [r["current"] for r in listing] == [False] * 4 + [True]
    assert [r["labels"] for r in listing] == [12, 12, 12, 11, 12]

    # readers pin a version: root/name (CURRENT once), root/name@vNNNNNN, plain folders
    resolved, name, version = resolve_index(f"{root}/drinks")
    assert (name, version) == ("drinks", "v000005")
    assert pin_spec(f"{root}/drinks") == f"{root}/drinks@v000005"
    pinned, _, _ = resolve_index(f"{root}/drinks@v000003")
    assert IndexData.load(pinned).id_map == IndexRepo(root, "drinks").load("v000003").id_map
    if root.startswith("s3://"):
        assert resolved.startswith(str(tmp_path / "cache"))  # downloaded once into the version cache
        before = os.stat(Path(resolved) / "vector.index").st_mtime_ns
        assert resolve_index(f"{root}/drinks@v000005")[0] == resolved
        assert os.stat(Path(resolved) / "vector.index").st_mtime_ns == before  # not downloaded again
    pipe = make_pipeline(rec_topk=1)
    image = str(DRINK / "gallery" / base[3][0])
    (res,) = list(pipe.predict(image, index=f"{root}/drinks@v000003"))
    assert (res.index_name, res.index_version) == ("drinks", "v000003")
    assert res["boxes"][0]["labels"][0] == base[3][1]
    assert pipe.identity(pipe.config, {"index": f"{root}/drinks"}).data[0].sha256 == "v000005"

    # one writer per name: the flows made the Prefect concurrency limit
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("pxflow-index-drinks").limit == 1

    # a rebuild with another index type and metric reuses every stored feature
    out, _ = cli_json(capfd, "build", *common, "--pipeline", config, "--gallery", base_file, "--index_type", "HNSW32", "--metric_type", "L2")
    assert out["features_computed"] == 0 and out["features_reused"] == 36 and out["version"] == "v000006"
    assert check_version_files(storage, root, "drinks", "v000006")["structure"] == "HNSW32"

    out, _ = cli_json(capfd, "gc", *common, "--keep", "2")
    assert out["deleted"] == ["v000001", "v000002", "v000003", "v000004"] and out["current"] == "v000006"
    assert IndexRepo(root, "drinks").versions() == ["v000005", "v000006"]


# ---------------------------------------------------------------- concurrent writers

def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _base(root: str, name: str, n: int = 20, dim: int = 32) -> IndexRepo:
    repo = IndexRepo(root, name)
    entries = [{"uri": f"base/{i}.jpg", "etag": "e"} for i in range(n)]
    repo.build(_unit_rows(n, dim, 0), [f"c{i % 4}" for i in range(n)], entries, "Flat", "IP")
    return repo


def test_a_torn_index_info_yaml_fails_validation(tmp_path):
    """index_info.yaml is not what IndexData.load reads (id_map.yaml wins), so validation checks it by its checksum."""
    from pxflow.pipelines.retrieval.versions import ValidationError, validate_version

    repo = _base(str(tmp_path), "torn")
    version = repo.current_version()
    assert validate_version(repo, version)
    (tmp_path / "torn" / version / "index_info.yaml").write_text("id_map: {}\nindex_type: Flat\nmetric_type: IP\n")
    with pytest.raises(ValidationError, match=r"index_info.yaml: checksum differs from manifest.json"):
        validate_version(repo, version)


def test_ten_concurrent_writers_lose_no_update(where):
    root, _ = where
    repo = _base(root, "cas")
    barrier = threading.Barrier(10)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            barrier.wait()
            IndexRepo(root, "cas").append(_unit_rows(3, 32, 100 + k), [f"w{k}"] * 3, [{"uri": f"w{k}/{j}.jpg", "etag": "e"} for j in range(3)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = repo.load()
    assert len(final) == 20 + 30
    assert Counter(final.id_map.values()) == {**{f"c{i}": 5 for i in range(4)}, **{f"w{k}": 3 for k in range(10)}}
    assert sorted(final.id_map) == list(range(50))  # every id once, none reused
    assert len(repo.history()) == 11  # one published version per writer, in one parent chain
    assert repo.history()[-1] == "v000001"

    # concurrent removes of different ids: none is lost
    def remover(i: int) -> None:
        IndexRepo(root, "cas").remove(ids=[i])

    threads = [threading.Thread(target=remover, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(repo.load().id_map) == list(range(5, 50))


APPEND_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from pxflow.pipelines.retrieval.versions import IndexRepo
    root, name, tag, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    x = np.load(sys.argv[5])
    while time.time() < start:
        time.sleep(0.001)
    m = IndexRepo(root, name).append(x, [tag] * len(x), [{"uri": f"{tag}/{i}.jpg", "etag": "e"} for i in range(len(x))])
    print(m["version"])
    """
)


def _env(extra: dict | None = None) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(extra or {})}


def test_two_append_processes_started_at_once_keep_both(where, tmp_path):
    root, _ = where
    repo = _base(root, "procs", n=100)
    paths = []
    for k in range(2):
        paths.append(str(tmp_path / f"x{k}.npy"))
        np.save(paths[-1], _unit_rows(100, 32, 10 + k))
    start = time.time() + 6.0  # both processes past their imports, then both load CURRENT at once
    procs = [
        subprocess.Popen([sys.executable, "-c", APPEND_SCRIPT, root, "procs", f"p{k}", str(start), paths[k]],
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    published = IndexRepo(root, "procs").history()
    assert len(published) == 3 and sorted(o[0].strip() for o in outs) == sorted(published[:2])
    final = repo.load()
    assert len(final) == 300  # today's folder-level append keeps 200 of these 300
    assert Counter(final.id_map.values())["p0"] == 100 and Counter(final.id_map.values())["p1"] == 100


# ---------------------------------------------------------------- crashes

CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tests.support.faults  # the kill hook (PXFLOW_KILL_AT)
    from pxflow.pipelines.retrieval.versions import IndexRepo
    root, name = sys.argv[1], sys.argv[2]
    x = np.random.default_rng(5).normal(size=(4, 32)).astype(np.float32)
    IndexRepo(root, name).append(x, ["crash"] * 4, [{"uri": f"crash/{i}.jpg", "etag": "e"} for i in range(4)])
    """
)


@pytest.mark.parametrize("point", ["mid_upload", "after_upload"])
def test_a_crash_leaves_current_on_a_complete_version_and_gc_removes_the_orphan(where, point):
    root, _ = where
    repo = _base(root, f"crash-{point}")
    before = repo.load()
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, root, repo.name], env=_env(kill_env(f"index_{point}")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]  # died where told, without cleaning up
    assert repo.current_version() == "v000001"
    assert repo.versions() == ["v000001", "v000002"]  # the orphan is there ...
    orphan = join_uri(repo.base, "v000002")
    names = {i.uri.rsplit("/", 1)[-1] for i in repo.storage.list_objects(orphan)}
    assert "vector.index" in names and (("id_map.yaml" not in names) if point == "mid_upload" else ("manifest.json" in names))
    assert repo.history() == ["v000001"]  # ... and nothing references it
    assert all(repo.manifest(v).get("parent") != "v000002" for v in repo.history())
    after = repo.load()
    assert after.id_map == before.id_map and len(after) == 20  # the index is usable
    with pytest.raises(VersionError, match="never published"):
        resolve_index(f"{repo.base}@v000002")  # readers cannot pin an orphan
    with pytest.raises(VersionError, match="never published"):
        repo.rollback("v000002")
    # above CURRENT: as far as gc can tell (no clock is trusted) a writer might still be at work
    assert repo.gc(keep=5)["in_progress"] == ["v000002"] and repo.versions() == ["v000001", "v000002"]
    # the next writer goes on from the complete version; once CURRENT is past it, the orphan goes
    repo.append(_unit_rows(2, 32, 9), ["next"] * 2, [{"uri": "n/0.jpg", "etag": "e"}, {"uri": "n/1.jpg", "etag": "e"}])
    assert len(repo.load()) == 22 and repo.current_version() == "v000003"
    result = repo.gc(keep=5)
    assert result["deleted"] == ["v000002"] and repo.versions() == ["v000001", "v000003"]


def test_pins_keep_a_version_from_gc(tmp_path):
    repo = _base(str(tmp_path), "pins")
    for k in range(3):
        repo.append(_unit_rows(1, 32, 50 + k), [f"a{k}"], [{"uri": f"a{k}.jpg", "etag": "e"}])
    pin = repo.pin("v000001", ttl_s=600)
    expired = repo.pin("v000002", ttl_s=-1)
    result = repo.gc(keep=1)
    assert result["deleted"] == ["v000002", "v000003"] and repo.versions() == ["v000001", "v000004"]
    assert not repo.storage.exists(expired)  # expired pins are cleaned up
    repo.unpin(pin)
    assert repo.gc(keep=1)["deleted"] == ["v000001"]


# ---------------------------------------------------------------- refresh

def test_refresh_appends_exactly_the_added_images_and_removes_the_deleted(where, shared_dir, config, prefect_server, capfd):
    root, gallery = where
    storage = Storage()
    lines = (DRINK / "gallery" / "drink_label.txt").read_text(encoding="utf-8").splitlines()
    pairs = [tuple(line.split("\t", 1)) for line in lines[:50]]
    first, added = pairs[:30], pairs[30:50]
    put_gallery(gallery, first, "labels.txt", storage)
    common = ["--root", root, "--name", "shelf", "--pipeline", config]
    out, _ = cli_json(capfd, "build", *common, "--gallery", gallery, "--index_type", "Flat")
    assert out["live"] == 30 and out["features_computed"] == 30

    from pxflow.tasks.lake import Lake, count_features

    lake = Lake(join_uri(root, "_lake"), storage)
    rows_before = count_features(lake)
    deleted = first[:5]
    for rel, _ in deleted:
        storage.delete(join_uri(gallery, rel))
    remaining = first[5:] + added
    put_gallery(gallery, added, "new.txt", storage)  # only the 20 new images are written ...
    storage.delete(join_uri(gallery, "new.txt"))
    storage.write_bytes(join_uri(gallery, "labels.txt"), "".join(f"{r}\t{lab}\n" for r, lab in remaining).encode("utf-8"))
    out, _ = cli_json(capfd, "refresh", *common, "--gallery", gallery)
    assert out["version"] == "v000002" and out["operation"] == "refresh"
    assert out["features_computed"] == 20 and out["features_reused"] == 25
    assert count_features(lake) - rows_before == 20  # rows in the Delta table, counted by deltalake
    assert out["live"] == 30 - 5 + 20
    manifest = check_version_files(storage, root, "shelf", "v000002")
    assert sorted(c["uri"] for c in manifest["consumed"]) == sorted(join_uri(gallery, rel) for rel, _ in remaining)

    out, _ = cli_json(capfd, "refresh", *common, "--gallery", gallery)
    assert out["unchanged"] is True and out["features_computed"] == 0
    assert IndexRepo(root, "shelf").current_version() == "v000002"


# ---------------------------------------------------------------- bad folders and arguments

def test_shifted_ids_with_the_same_count_fail_to_load(tmp_path):
    data = build_index(_unit_rows(10, 8, 1), [f"l{i}" for i in range(10)], "Flat", "IP")
    folder = tmp_path / "idx"
    data.save(str(folder))
    info = yaml.safe_load((folder / "id_map.yaml").read_text())
    info["id_map"] = {k + 1: v for k, v in info["id_map"].items()}  # same count, every id shifted
    (folder / "id_map.yaml").write_text(yaml.safe_dump(info))
    (folder / "pxflow_index.json").unlink()  # as PaddleX would leave it (no checksums to catch the edit)
    with pytest.raises(IndexFormatError, match=r"id_map.yaml: ids do not match the ids stored in vector.index"):
        IndexData.load(str(folder))
    assert stored_ids(faiss.read_index(str(folder / "vector.index"))).tolist() == list(range(10))


def test_broken_folders_and_arguments_are_one_line_errors(tmp_path, capfd, config, shared_dir):
    good = tmp_path / "good"
    build_index(_unit_rows(10, 8, 1), [f"l{i}" for i in range(10)], "Flat", "IP").save(str(good))
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "vector.index").write_bytes((good / "vector.index").read_bytes()[:100])
    (truncated / "id_map.yaml").write_bytes((good / "id_map.yaml").read_bytes())
    bad_yaml = tmp_path / "bad_yaml"
    bad_yaml.mkdir()
    (bad_yaml / "vector.index").write_bytes((good / "vector.index").read_bytes())
    (bad_yaml / "id_map.yaml").write_text("id_map: {0: a\nmetric_type: [IP\n")

    def run(*args: str) -> str:
        capfd.readouterr()
        assert pxflow(["index", *args]) == 2
        err = capfd.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    assert "truncated/vector.index" in run("info", "--index", str(truncated))
    assert "bad_yaml/id_map.yaml: invalid YAML" in run("info", "--index", str(bad_yaml))
    assert "--gallery is required" in run("append", "--index", str(good), "--pipeline", config)
    assert "nope.txt" in run("remove", "--index", str(good), "--ids_file", str(tmp_path / "nope.txt"))
    assert "nope.txt" in run("append", "--index", str(good), "--pipeline", config, "--gallery", str(tmp_path / "nope.txt"))
    # an 8-d index and a 512-d recognition model: the wrong model for this index
    gallery = tmp_path / "g"
    gallery.mkdir()
    rel = _drink_subset()[0][0]
    (gallery / "a.jpg").write_bytes((DRINK / "gallery" / rel).read_bytes())
    (gallery / "labels.txt").write_text("a.jpg\tdrink\n", encoding="utf-8")
    err = run("append", "--index", str(good), "--pipeline", config, "--gallery", str(gallery / "labels.txt"))
    assert "good/vector.index holds 8-d vectors" in err
    assert "--root and --name are required" in run("list", "--root", str(tmp_path))


def test_native_prints_on_fd1_cannot_break_the_json(capfd):
    from pxflow.flows.cli.index import stdout_to_stderr

    with stdout_to_stderr():
        os.write(1, b"ReduceMeanCheckIfOneDNNSupport\n")  # what Paddle's C++ prints while a model loads
        print("python noise")
    print(json.dumps([{"version": "v000001"}]))
    out, err = capfd.readouterr()
    assert json.loads(out) == [{"version": "v000001"}]
    assert "ReduceMeanCheckIfOneDNNSupport" in err and "python noise" in err


def test_gallery_forms_label_file_manifest_and_prefix(tmp_path, shared_dir):
    from pxflow.tasks.features import gallery_entries

    storage = Storage()
    pairs = _drink_subset()[:4]
    folder = str(tmp_path / "g")
    label_file = put_gallery(folder, pairs, "labels.txt", storage)
    want = [(join_uri(folder, rel), lab) for rel, lab in pairs]
    from_file = gallery_entries(label_file, storage)
    assert [(e["uri"], e["label"]) for e in from_file] == want
    assert all(e["etag"] == storage.stat(e["uri"]).etag for e in from_file)
    assert [(e["uri"], e["label"]) for e in gallery_entries(folder, storage)] == want  # a prefix with one label file
    manifest = tmp_path / "gallery.csv"
    manifest.write_text("uri,label\n" + "".join(f"{u},{lab}\n" for u, lab in want), encoding="utf-8")
    assert [(e["uri"], e["label"]) for e in gallery_entries(str(manifest), storage)] == want
    (tmp_path / "g" / "other.txt").write_text("x\ty\n")
    with pytest.raises(ValueError, match="exactly one label file"):
        gallery_entries(folder, storage)


def test_a_version_that_fails_validation_is_never_published(tmp_path):
    from pxflow.pipelines.retrieval.versions import Change, ValidationError

    repo = _base(str(tmp_path), "guard")
    good = repo.load()

    def shifted(current, manifest):  # same count, every label on the wrong id
        info = {**current.index_info, "id_map": {k + 1: v for k, v in current.id_map.items()}}
        return Change(IndexData(current.index, info, current.meta), manifest["consumed"])

    with pytest.raises(ValidationError, match="ids do not match"):
        repo.commit("bad", shifted)
    assert repo.current_version() == "v000001" and repo.versions() == ["v000001"]  # the bad directory was removed
    assert repo.load().id_map == good.id_map


def test_two_cli_appends_at_once_keep_every_vector(subset, config, prefect_server, tmp_path, capfd):
    """Two `pxflow index append` processes (flows, writer limit, compare-and-swap) on one index name."""
    root, gallery = str(tmp_path / "indexes"), str(tmp_path / "gallery")
    storage = Storage()
    first = put_gallery(gallery, subset[:20], "first.txt", storage)
    a = put_gallery(gallery, subset[20:40], "a.txt", storage)
    b = put_gallery(gallery, subset[40:60], "b.txt", storage)
    common = ["--root", root, "--name", "shop", "--pipeline", config]
    cli_json(capfd, "build", *common, "--gallery", first, "--index_type", "Flat")
    procs = [
        subprocess.Popen([sys.executable, "-m", "pxflow.flows", "index", "append", *common, "--gallery", g],
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
        for g in (a, b)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    results = [json.loads(o[0]) for o in outs]  # stdout is exactly one JSON object each
    final = IndexRepo(root, "shop").load()
    assert len(final) == 60 and sorted(final.id_map) == list(range(60))
    consumed = {c["uri"] for c in IndexRepo(root, "shop").manifest(IndexRepo(root, "shop").current_version())["consumed"]}
    assert consumed == {join_uri(gallery, rel) for rel, _ in subset}
    assert sorted(r["version"] for r in results) == ["v000002", "v000003"]  # serialised by the writer limit


# ---------------------------------------------------------------- readers pin a version

def test_annotate_pins_the_version_and_the_next_run_follows_a_remove(subset, config, shitu_models, prefect_server, tmp_path,
                                                                     monkeypatch):
    """Rows record the pinned version; a publish during a run does not change its rows; after a
    remove --label the next run re-recognises (a new annotation key) and the removed label is gone."""
    from prefect.logging.configuration import setup_logging

    from pxflow.flows.annotate import annotate
    from pxflow.flows.options import AnnotateOptions
    from pxflow.tasks.annotate_shard import run_shard
    from pxflow.tasks.job import prepare_job
    from tests.support.annotate_helpers import read_table

    # the CLI tests above first configured Prefect's logging under capfd, whose capture files are closed
    # now: the root console handler would still write to them, so rebuild the handlers on today's streams
    setup_logging(incremental=False)

    monkeypatch.setenv("PXFLOW_INDEX_CACHE", str(tmp_path / "cache"))
    root, storage = str(tmp_path / "indexes"), Storage()
    gallery = put_gallery(str(tmp_path / "gallery"), subset, "all.txt", storage)
    from pxflow.flows.index import index_build, index_remove
    from pxflow.flows.options import FeatureOptions

    index_build(root, "drinks", gallery, index_type="Flat", features=FeatureOptions(rec_model_dir=shitu_models["rec"]))
    spec = f"{root}/drinks"
    images = sorted(str(p) for p in (DRINK / "test_images").iterdir() if not p.name.startswith("."))
    out = tmp_path / "out"
    options = AnnotateOptions(pipeline=config, predict_kwargs={"index": spec, "rec_threshold": 0.0})
    first = annotate(input=str(DRINK / "test_images"), output=str(out), options=options)
    rows = [r for r in read_table(str(out / "objects")).to_pylist() if r["run_key"] == first["run_key"]]
    assert rows and {(r["index_name"], r["index_version"]) for r in rows} == {("drinks", "v000001")}
    top = Counter(r["rec_label"] for r in rows).most_common(1)[0][0]

    # a job pinned before a publish keeps reading the version it pinned
    pinned = prepare_job(str(tmp_path / "pinned"), pipeline=config, predict_kwargs={"index": spec, "rec_threshold": 0.0})
    index_remove(root, "drinks", labels=[top])
    assert IndexRepo(root, "drinks").current_version() == "v000002"
    run_shard(pinned, "s1", images)
    during = read_table(str(tmp_path / "pinned" / "objects")).to_pylist()
    assert {r["index_version"] for r in during} == {"v000001"} and top in {r["rec_label"] for r in during}

    second = annotate(input=str(DRINK / "test_images"), output=str(out), options=options)
    assert second["run_key"] != first["run_key"] and second["images_inferred"] == len(images)  # re-recognised
    after = [r for r in read_table(str(out / "objects")).to_pylist() if r["run_key"] == second["run_key"]]
    assert after and {r["index_version"] for r in after} == {"v000002"}
    assert top not in {r["rec_label"] for r in after}
