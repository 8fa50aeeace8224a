"""pipelines.retrieval: IndexData format, build/append/remove/compact, tuning, thresholds.

Real data: the drink gallery's features (generated feature model, computed once per
session). Small synthetic vectors where an answer must be known by hand.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest
import yaml

from pxflow.pipelines.retrieval import (
    ID_MAP_FILE,
    META_FILE,
    VECTOR_FILE,
    IndexData,
    IndexFormatError,
    StaleCentroidsWarning,
    append_index,
    build_index,
    compact_index,
    ivf_structure,
    load_gallery,
    parse_gallery_lines,
    remove_index,
)
from tests.conftest import DRINK
from tests.support.shitu_models import drink_gallery, shitu_models, shitu_pipeline  # noqa: F401 (fixtures)

GRID = [(t, m) for t in ("Flat", "IVF", "HNSW32") for m in ("IP", "L2")]


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    faiss.normalize_L2(rows)
    return rows


def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    which = rng.integers(0, clusters, n)
    return unit(centres[which] + 0.4 * rng.standard_normal((n, dim))), [f"c{k}" for k in which]


def loo_recall(data: IndexData, features: np.ndarray, labels: list[str]) -> float:
    """Leave-one-out recall@1: each gallery vector's nearest *other* entry has its label."""
    scores, ids = data.search(features, 2)
    hits = 0
    for row, (i0, i1) in enumerate(ids):
        other = i1 if i0 == row else i0
        hits += data.id_map[int(other)] == labels[row]
    return hits / len(labels)


# ---------------------------------------------------------------- gallery files

def test_gallery_lines_split_on_first_whitespace_and_keep_label_spaces():
    text = "a/1.jpg\t脉动\n\nb/2.jpg   Coca Cola Zero \r\nc/3.jpg label\twith tab\n"
    assert parse_gallery_lines(text) == [("a/1.jpg", "脉动"), ("b/2.jpg", "Coca Cola Zero"), ("c/3.jpg", "label\twith tab")]
    with pytest.raises(ValueError, match=r":2: expected"):
        parse_gallery_lines("ok.jpg x\nlonely.jpg\n", "f.txt")


def test_drink_label_file_paths_resolve_against_its_folder():
    label_file = Path(DRINK) / "gallery" / "drink_label.txt"
    if not label_file.is_file():
        pytest.skip("../shared absent")
    uris, labels = load_gallery(str(label_file))
    assert len(uris) == len(labels) == 988
    assert uris[0] == str(label_file.parent / "0" / "0.jpg") and labels[0] == "脉动"
    assert len(set(labels)) == 197


def test_drink_gallery_embeds_987_images_and_reports_the_missing_one(drink_gallery):
    features, labels, skipped = drink_gallery
    assert features.shape == (987, 512) and len(labels) == 987
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-4)
    assert [(Path(s["input_path"]).parts[-2:], s["error_type"]) for s in skipped] == [(("213", "0.jpg"), "not_found")]


# ---------------------------------------------------------------- build on real features

@pytest.mark.parametrize("index_type,metric_type", GRID)
def test_index_recall_matches_exact_search_at_defaults(drink_gallery, index_type, metric_type):
    features, labels, _ = drink_gallery
    exact = build_index(features, labels, "Flat", metric_type)
    data = build_index(features, labels, index_type, metric_type)
    assert len(data) == 987 and data.index.ntotal == 987
    if index_type == "IVF":
        assert data.meta.structure.startswith("IVF") and data.meta.nprobe >= 1
    if index_type == "HNSW32":
        assert data.meta.structure == "HNSW32" and data.meta.ef_search >= 16
    assert abs(loo_recall(data, features, labels) - loo_recall(exact, features, labels)) <= 0.01


@pytest.mark.parametrize("index_type", ["Flat", "IVF", "HNSW32"])
def test_append_then_remove_restores_original_results(drink_gallery, index_type):
    features, labels, _ = drink_gallery
    base = build_index(features[:900], labels[:900], index_type, "IP")
    queries = features[::7]
    before = base.search(queries, 5)
    grown = append_index(features[900:], labels[900:], base)
    assert len(grown) == 987 and sorted(grown.id_map)[-1] == 986
    assert grown.search(features[950:951], 1)[1][0, 0] == 950  # the appended vector finds itself
    shrunk = remove_index(list(range(900, 987)), grown)
    assert len(base) == 900 and base.search(queries, 5)[1].tolist() == before[1].tolist()  # inputs untouched
    after = shrunk.search(queries, 5) if index_type != "HNSW32" else compact_index(shrunk).search(queries, 5)
    assert after[1].tolist() == before[1].tolist()
    assert np.array_equal(after[0], before[0])


def test_ivf_remove_keeps_ids_right():
    """IndexIDMap2.remove_ids on IVF returns wrong ids afterwards (PaddleX's remove); ours must not."""
    x, labels = clustered(2000)
    data = build_index(x, labels, "IVF", "IP")
    pruned = remove_index(list(range(0, 2000, 3)), data)
    _, ids = pruned.search(x[1:2000:3], 1)
    assert ids[:, 0].tolist() == list(range(1, 2000, 3))  # each surviving vector still finds its own id


def test_hnsw_remove_tombstones_by_label_and_compacts(tmp_path):
    x, labels = clustered(1500)
    data = build_index(x, labels, "HNSW32", "IP")
    gone = remove_index(None, data, labels=["c3"])
    removed = {i for i, lab in enumerate(labels) if lab == "c3"}
    assert removed and set(gone.meta.tombstones) == removed and gone.index.ntotal == 1500
    _, ids = gone.search(x, 10)
    assert not (set(ids.ravel().tolist()) & removed)
    assert all(labs is None or "c3" not in labs[0] for labs in gone.query(x, 10, None))
    gone.save(str(tmp_path / "idx"))
    loaded = IndexData.load(str(tmp_path / "idx"))
    assert set(loaded.meta.tombstones) == removed and not (set(loaded.search(x, 10)[1].ravel().tolist()) & removed)
    compacted = compact_index(loaded)
    assert compacted.index.ntotal == len(compacted) == 1500 - len(removed) and not compacted.meta.tombstones
    again = append_index(x[:2], ["new", "new"], loaded)  # append compacts first; ids are never reused
    assert not again.meta.tombstones and min(i for i, v in again.id_map.items() if v == "new") == 1500


# ---------------------------------------------------------------- small galleries, thresholds, warnings

def test_ivf_on_small_galleries():
    for n in (1, 5, 255):
        x, labels = clustered(n, seed=n)
        data = build_index(x, labels, "IVF", "L2")
        assert data.index_type == "IVF" and data.meta.structure == "Flat"
        assert data.search(x, 1)[1][:, 0].tolist() == list(range(n))
    assert ivf_structure(300) == "IVF7,Flat"  # at least 39 training points per list
    x, labels = clustered(300)
    data = build_index(x, labels, "IVF", "IP")
    assert data.search(x, 1)[1][:, 0].tolist() == list(range(300))


def test_threshold_is_similarity_for_ip_and_distance_for_l2():
    x = unit(np.eye(4, 8) + 0.05)
    q = unit(np.stack([x[0] + 0.01, np.ones(8)]))  # one near x[0], one far from everything
    ip = build_index(x, ["a", "b", "c", "d"], "Flat", "IP")
    l2 = build_index(x, ["a", "b", "c", "d"], "Flat", "L2")
    near_ip, far_ip = ip.query(q, 2, threshold=0.9)
    near_l2, far_l2 = l2.query(q, 2, threshold=0.2)
    assert near_ip == (["a"], [pytest.approx(float(q[0] @ x[0]), abs=1e-5)]) and far_ip is None
    assert near_l2[0] == ["a"] and near_l2[1][0] < 0.2 and far_l2 is None
    assert len(ip.query(q[:1], 4, threshold=None)[0][0]) == 4


def test_appending_much_to_ivf_warns_about_frozen_centroids():
    x, labels = clustered(1200)
    data = build_index(x[:800], labels[:800], "IVF", "IP")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = append_index(x[800:850], labels[800:850], data)  # 50/850: fine
    with pytest.warns(StaleCentroidsWarning):
        append_index(x[850:], labels[850:], small)


def test_bad_features_are_rejected():
    x, labels = clustered(10)
    data = build_index(x, labels, "Flat", "IP")
    with pytest.raises(ValueError, match="dimension"):
        append_index(np.ones((1, 5), np.float32), ["z"], data)
    with pytest.raises(ValueError, match="labels"):
        build_index(x, labels[:3], "Flat", "IP")
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.full((2, 4), np.nan, np.float32), ["a", "b"], "Flat", "IP")


# ---------------------------------------------------------------- on-disk format

@pytest.mark.parametrize("index_type", ["Flat", "IVF", "HNSW32"])
def test_saved_files_read_the_paddlex_way(tmp_path, index_type):
    x, labels = clustered(600)
    data = build_index(x, labels, index_type, "IP", model={"name": "m", "sha256": "0" * 64})
    data.save(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([VECTOR_FILE, ID_MAP_FILE, "index_info.yaml", META_FILE])
    # what PaddleX 3.7.2's IndexData.load does: yaml (FullLoader) + faiss.read_index, ntotal == len(id_map);
    # index_info.yaml, the name PaddleX's documents give the file, holds the same mapping
    info = yaml.load((tmp_path / ID_MAP_FILE).read_text(encoding="utf-8"), Loader=yaml.FullLoader)
    assert yaml.load((tmp_path / "index_info.yaml").read_text(encoding="utf-8"), Loader=yaml.FullLoader) == info
    assert set(info) == {"id_map", "index_type", "metric_type"} and info["index_type"] == index_type
    assert info["metric_type"] == "IP" and all(type(k) is int and type(v) is str for k, v in info["id_map"].items())
    plain = faiss.read_index(str(tmp_path / VECTOR_FILE))
    assert isinstance(faiss.downcast_index(plain), faiss.IndexIDMap2) and plain.ntotal == len(info["id_map"])
    _, ids = plain.search(x[:20], 1)  # plain faiss (PaddleX) search uses the tuned parameters stored in the index
    assert [info["id_map"][int(i)] for i in ids[:, 0]] == labels[:20]
    loaded = IndexData.load(str(tmp_path))
    assert loaded.id_map == data.id_map and loaded.meta.nprobe == data.meta.nprobe
    assert loaded.meta.ef_search == data.meta.ef_search and loaded.meta.model["name"] == "m"
    assert np.array_equal(loaded.search(x, 3)[1], data.search(x, 3)[1])


def test_paddlex_written_index_loads_and_gets_tuned(tmp_path):
    """An index as PaddleX writes it (no side file, IVF nprobe left at 1) becomes searchable well."""
    x, labels = clustered(3000, clusters=60)
    inner = faiss.index_factory(32, "IVF375,Flat", faiss.METRIC_INNER_PRODUCT)  # PaddleX: nlist = N // 8
    inner.train(x)
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(x, np.arange(3000, dtype=np.int64))
    faiss.write_index(index, str(tmp_path / VECTOR_FILE))
    info = {"id_map": {i: lab for i, lab in enumerate(labels)}, "index_type": "IVF", "metric_type": "IP"}
    (tmp_path / ID_MAP_FILE).write_text(yaml.dump(info, allow_unicode=True), encoding="utf-8")
    data = IndexData.load(str(tmp_path))
    assert data.meta.structure == "IVF375,Flat" and data.meta.nprobe > 1 and data.meta.tuned_recall >= 0.995
    exact = build_index(x, labels, "Flat", "IP")
    assert abs(loo_recall(data, x, labels) - loo_recall(exact, x, labels)) <= 0.01


def test_torn_or_foreign_directories_are_refused(tmp_path):
    x, labels = clustered(50)
    build_index(x, labels, "Flat", "IP").save(str(tmp_path))
    other = build_index(x[:10], labels[:10], "Flat", "IP")
    (tmp_path / ID_MAP_FILE).write_text(yaml.safe_dump(other.index_info, allow_unicode=True), encoding="utf-8")
    with pytest.raises(IndexFormatError, match="concurrent or interrupted"):
        IndexData.load(str(tmp_path))
    with pytest.raises(IndexFormatError, match="not an index directory"):
        IndexData.load(str(tmp_path / "nothing"))
    assert not list(tmp_path.glob(".tmp-*"))


def test_feature_model_cache_follows_the_model_files_not_the_path(tmp_path):
    """A recognition model directory whose files are replaced is loaded anew (features of old weights
    would otherwise be recorded under the new model's checksum)."""
    import shutil

    import onnx

    from pxflow.tasks.features import feature_model
    from tests.conftest import SHARED, require_shared

    require_shared()
    d = tmp_path / "rec"
    shutil.copytree(SHARED / "models" / "MobileNetV1_embedding_coral", d)
    first = feature_model(rec_model_dir=str(d))
    assert feature_model(rec_model_dir=str(d)) is first  # loaded once while the files are the same
    before = first.describe()["sha256"]
    graph = onnx.load(str(d / "inference.onnx"))
    graph.producer_name = "rewritten"
    onnx.save(graph, str(d / "inference.onnx"))
    second = feature_model(rec_model_dir=str(d))
    assert second is not first
    assert second.describe()["sha256"] != before
