"""Build, append to, remove from and compact ``IndexData`` — from features, not images.

These functions are storage- and model-agnostic: callers (the PP-ShiTuV2 pipeline,
index tasks, the CLI) turn gallery images into feature rows first. Every function
returns a *new* ``IndexData`` and leaves its input untouched (PaddleX mutates the
faiss index it was given, so a failed append could corrupt a loaded index), which is
what lets index versions be immutable.

Fixes over PaddleX 3.7.2's ``FaissBuilder``:

- ``IVF`` picks ``nlist`` from N (about sqrt(N), at most N/39 so every centroid trains on
  enough points) and falls back to exact ``Flat`` under ``IVF_MIN_VECTORS``; PaddleX uses
  N//8 lists, which fails outright below 8 vectors and trains badly on small galleries.
- ``nprobe`` / ``efSearch`` are tuned and recorded (see :mod:`.tuning`).
- ``HNSW32`` supports removal, by tombstoning ids (searches exclude them with an
  ``IDSelector``); the graph is rebuilt without them by :func:`compact_index`, which
  :func:`append_index` runs first when tombstones exist.
- removal by label as well as by id; ids are never reused.
- appending to IVF warns (``StaleCentroidsWarning``) once vectors added after training
  exceed ``IVF_APPEND_WARN_SHARE`` of the index: the centroids are frozen at build time.
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import Any, Sequence

import faiss
import numpy as np

from .index_data import (
    FAISS_METRICS,
    INDEX_TYPES,
    METRIC_TYPES,
    IndexData,
    IndexMeta,
    apply_search_params,
    inner_index,
    stored_ids,
    stored_vectors,
)
from .tuning import tune_search_params

IVF_MIN_VECTORS = 256
IVF_MIN_POINTS_PER_LIST = 39  # faiss warns below this many training points per centroid
IVF_APPEND_WARN_SHARE = 0.2


class StaleCentroidsWarning(UserWarning):
    """Many vectors were appended to an IVF index whose centroids were trained without them."""


def ivf_structure(n: int) -> str:
    """The faiss factory string for an ``IVF`` request over ``n`` vectors (``Flat`` when too few)."""
    if n < IVF_MIN_VECTORS:
        return "Flat"
    nlist = max(1, min(65536, round(math.sqrt(n)), n // IVF_MIN_POINTS_PER_LIST))
    return f"IVF{nlist},Flat"


def structure_for(index_type: str, n: int) -> str:
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
    if index_type == "IVF":
        return ivf_structure(n)
    return index_type  # "Flat" and "HNSW32" are faiss factory strings already


def as_features(features: Any, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    if x.ndim == 1 and dim is not None and x.size == dim:
        x = x.reshape(1, dim)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array [n, dim], got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"features have dimension {x.shape[1]}, the index has {dim}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinite values")
    return x


def build_index(
    features: Any,
    labels: Sequence[str],
    index_type: str = "HNSW32",
    metric_type: str = "IP",
    *,
    nprobe: int | None = None,
    ef_search: int | None = None,
    model: dict[str, Any] | None = None,
) -> IndexData:
    """A new index over ``features`` [n, dim] labelled by ``labels`` (ids 0..n-1).

    ``nprobe``/``ef_search`` override the tuned values.
    """
    if metric_type not in METRIC_TYPES:
        raise ValueError(f"metric_type must be one of {METRIC_TYPES}, got {metric_type!r}")
    x = as_features(features)
    labels = [str(v) for v in labels]
    if len(labels) != len(x):
        raise ValueError(f"{len(x)} feature rows but {len(labels)} labels")
    if len(x) == 0:
        raise ValueError("cannot build an index from an empty gallery")
    ids = np.arange(len(x), dtype=np.int64)
    structure = structure_for(index_type, len(x))
    index = _new_index(x.shape[1], structure, metric_type, x)
    _add(index, x, ids)
    meta = IndexMeta(dim=x.shape[1], structure=structure, next_id=len(x), trained_count=len(x), model=dict(model or {}))
    _tune(index, meta, metric_type, nprobe, ef_search)
    return IndexData(index, _info(ids, labels, index_type, metric_type), meta)


def append_index(features: Any, labels: Sequence[str], index: "IndexData | str") -> IndexData:
    """``index`` plus new vectors with fresh ids (never reusing removed ones)."""
    data = IndexData.load(index)
    if data.meta.tombstones:
        data = compact_index(data)
    x = as_features(features, data.dim)
    labels = [str(v) for v in labels]
    if len(labels) != len(x):
        raise ValueError(f"{len(x)} feature rows but {len(labels)} labels")
    faiss_index = _clone(data.index)
    meta = IndexMeta.from_dict(vars(data.meta))
    ids = np.arange(meta.next_id, meta.next_id + len(x), dtype=np.int64)
    _add(faiss_index, x, ids)
    meta.next_id += len(x)
    id_map = dict(data.id_map)
    id_map.update(zip(ids.tolist(), labels))
    if isinstance(inner_index(faiss_index), faiss.IndexIVF):
        meta.appended_count += len(x)
        share = meta.appended_count / max(1, faiss_index.ntotal)
        if share > IVF_APPEND_WARN_SHARE:
            warnings.warn(
                f"{meta.appended_count} of {faiss_index.ntotal} vectors ({share:.0%}) were appended after the IVF "
                "centroids were trained; rebuild the index to retrain them",
                StaleCentroidsWarning,
                stacklevel=2,
            )
    return IndexData(faiss_index, {"id_map": id_map, "index_type": data.index_type, "metric_type": data.metric_type}, meta)


def remove_index(
    remove_ids: "Sequence[int] | np.ndarray | str | None" = None,
    index: "IndexData | str | None" = None,
    *,
    labels: Sequence[str] | None = None,
) -> IndexData:
    """``index`` without the given ids and/or every id carrying one of ``labels``.

    ``remove_ids`` may be a file with one id per line (first column), as in PaddleX.
    Unknown ids are ignored. On HNSW the ids are tombstoned (hidden from searches and
    from ``id_map``) until the next compaction.
    """
    if index is None:
        raise ValueError("remove_index needs an index")
    data = IndexData.load(index)
    ids = set(read_ids(remove_ids)) if remove_ids is not None else set()
    if labels is not None:
        ids.update(data.ids_for_labels(labels))
    ids &= set(data.id_map)
    meta = IndexMeta.from_dict(vars(data.meta))
    id_map = {k: v for k, v in data.id_map.items() if k not in ids}
    info = {"id_map": id_map, "index_type": data.index_type, "metric_type": data.metric_type}
    if not ids:
        return IndexData(_clone(data.index), info, meta)
    inner = inner_index(data.index)
    if isinstance(inner, faiss.IndexHNSW):
        faiss_index = _clone(data.index)
        meta.tombstones = sorted(set(meta.tombstones) | ids)
    elif isinstance(inner, faiss.IndexIVF):
        faiss_index = _ivf_without(data.index, ids)
    else:
        faiss_index = _clone(data.index)
        removed = faiss_index.remove_ids(faiss.IDSelectorBatch(np.fromiter(ids, dtype=np.int64)))
        if removed != len(ids):
            raise RuntimeError(f"faiss removed {removed} vectors, expected {len(ids)}")
    return IndexData(faiss_index, info, meta)


def compact_index(index: "IndexData | str") -> IndexData:
    """Rebuild the faiss structure from the live vectors (drops HNSW tombstones; same ids)."""
    data = IndexData.load(index)
    ids = stored_ids(data.index)
    vectors = stored_vectors(data.index)
    live = np.isin(ids, np.fromiter(data.id_map, dtype=np.int64, count=len(data.id_map)))
    ids, vectors = ids[live], vectors[live]
    meta = IndexMeta.from_dict(vars(data.meta))
    meta.tombstones = []
    structure = structure_for(data.index_type, len(ids)) if len(ids) else "Flat"
    faiss_index = _new_index(data.dim, structure, data.metric_type, vectors)
    _add(faiss_index, vectors, ids)
    meta.structure, meta.trained_count, meta.appended_count = structure, len(ids), 0
    _tune(faiss_index, meta, data.metric_type, None, None)
    return IndexData(faiss_index, {"id_map": dict(data.id_map), "index_type": data.index_type, "metric_type": data.metric_type}, meta)


# ---------------------------------------------------------------- helpers

def _new_index(dim: int, structure: str, metric_type: str, train: np.ndarray) -> faiss.Index:
    inner = faiss.index_factory(dim, structure, FAISS_METRICS[metric_type])
    if not inner.is_trained:
        inner.train(train)
    return faiss.IndexIDMap2(inner)


def _tune(index: faiss.Index, meta: IndexMeta, metric_type: str, nprobe: int | None, ef_search: int | None) -> None:
    inner = inner_index(index)
    if nprobe is not None and isinstance(inner, faiss.IndexIVF):
        meta.nprobe, meta.tuned_recall = int(nprobe), None
    elif ef_search is not None and isinstance(inner, faiss.IndexHNSW):
        meta.ef_search, meta.tuned_recall = int(ef_search), None
    else:
        tune_search_params(index, meta, FAISS_METRICS[metric_type])
    apply_search_params(index, meta)


def _ivf_without(index: faiss.Index, ids: set[int]) -> faiss.Index:
    """The IVF index minus ``ids``, re-added into the same (frozen) centroids in the same order.

    ``IndexIDMap2.remove_ids`` is only correct for indexes that compact their internal
    positions the way ``IndexFlat`` does; IVF keeps the old positions in its lists while
    the id map shifts, so afterwards searches return the wrong ids (PaddleX's
    ``remove_index`` on IVF has this bug). Re-adding the survivors avoids it and leaves
    each inverted list in its previous order, so results are exactly those before.
    """
    all_ids = stored_ids(index)
    vectors = stored_vectors(index)
    keep = ~np.isin(all_ids, np.fromiter(ids, dtype=np.int64, count=len(ids)))
    inner = faiss.clone_index(inner_index(index))
    inner.reset()  # keeps the trained quantizer
    out = faiss.IndexIDMap2(inner)
    _add(out, vectors[keep], all_ids[keep])
    return out


_OMP_LOCK = threading.Lock()


def _add(index: faiss.Index, x: np.ndarray, ids: np.ndarray) -> None:
    """``add_with_ids``; HNSW is added on one OpenMP thread so the graph is deterministic.

    faiss links HNSW nodes in parallel, so the same vectors give a different graph (and
    slightly different approximate results) on every build. On one thread, rebuilding
    the same vectors in the same order gives the identical graph, so an append followed
    by a remove and a compaction restores the original results exactly. Measured on 2
    cores under load it is no slower. The thread count is process-wide in OpenMP, hence
    the lock (other threads' faiss calls may briefly run single-threaded).
    """
    if len(x) == 0:
        return
    if not isinstance(inner_index(index), faiss.IndexHNSW):
        index.add_with_ids(x, ids)
        return
    with _OMP_LOCK:
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            index.add_with_ids(x, ids)
        finally:
            faiss.omp_set_num_threads(previous)


def _clone(index: faiss.Index) -> faiss.Index:
    try:
        return faiss.clone_index(index)
    except RuntimeError:  # a structure the cloner does not know: round-trip through bytes
        return faiss.deserialize_index(faiss.serialize_index(index))


def _info(ids: np.ndarray, labels: Sequence[str], index_type: str, metric_type: str) -> dict[str, Any]:
    return {"id_map": dict(zip(ids.tolist(), labels)), "index_type": index_type, "metric_type": metric_type}


def read_ids(remove_ids: "Sequence[int] | np.ndarray | str") -> list[int]:
    """Ids from a sequence, or from a file (local or remote) with one id per line, first column."""
    if isinstance(remove_ids, str):
        from ..io import storage

        text = storage.read_bytes(remove_ids).decode("utf-8")
        return [int(line.split()[0]) for line in text.splitlines() if line.strip()]
    return [int(v) for v in np.asarray(remove_ids).reshape(-1)]
