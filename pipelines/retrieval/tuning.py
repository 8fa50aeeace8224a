"""Choose IVF ``nprobe`` / HNSW ``efSearch`` from the data, instead of faiss's defaults.

PaddleX never sets them, so its IVF indexes search one list (``nprobe=1``) and its HNSW
indexes use ``efSearch=16``: recall depends on luck and on the data. Here the smallest
value (doubling) whose *leave-one-out* recall@1 against exact search reaches
``TARGET_RECALL`` on a sample of the stored vectors is chosen and recorded in the index
metadata. Leave-one-out (each sampled vector queries the index; its own entry is ignored)
measures exactly what a new query close to the gallery sees, and costs one exact search
of the sample plus a few approximate ones. Easy (clustered) data gets small values; hard
data (e.g. random high-dimensional vectors) gets near-exhaustive ones, which is the
honest price of recall there.
"""

from __future__ import annotations

import faiss
import numpy as np

from .index_data import IndexMeta, inner_index, stored_ids, stored_vectors

TARGET_RECALL = 0.995
SAMPLE_QUERIES = 1000
SEED = 0
MIN_EF_SEARCH = 16
MAX_EF_SEARCH = 8192


def tune_search_params(
    index: faiss.Index, meta: IndexMeta, metric: int, target: float = TARGET_RECALL, sample: int = SAMPLE_QUERIES
) -> None:
    """Set ``meta.nprobe`` / ``meta.ef_search`` (and ``meta.tuned_recall``) for ``index``, in place."""
    inner = inner_index(index)
    is_ivf, is_hnsw = isinstance(inner, faiss.IndexIVF), isinstance(inner, faiss.IndexHNSW)
    if not (is_ivf or is_hnsw):
        meta.nprobe = meta.ef_search = None
        meta.tuned_recall = 1.0
        return
    live = _live_mask(index, meta)
    if int(live.sum()) < 3:
        if is_ivf:
            meta.nprobe = int(inner.nlist)
        else:
            meta.ef_search = MIN_EF_SEARCH
        meta.tuned_recall = 1.0
        return
    ids = stored_ids(index)[live]
    vectors = stored_vectors(index)[live]
    rng = np.random.default_rng(SEED)
    rows = np.sort(rng.choice(len(ids), size=min(sample, len(ids)), replace=False))
    queries, query_ids = vectors[rows], ids[rows]
    exact_scores, exact_ids = _exact_neighbours(vectors, ids, queries, query_ids, metric)

    if is_ivf:
        candidates = _doubling(1, int(inner.nlist))
    else:
        candidates = _doubling(MIN_EF_SEARCH, MAX_EF_SEARCH)
    tombstones = np.asarray(sorted(meta.tombstones), dtype=np.int64)
    from .index_data import search_params

    chosen, recall = candidates[-1], 0.0
    for value in candidates:
        trial = IndexMeta.from_dict({**meta.__dict__, "nprobe": value if is_ivf else None, "ef_search": None if is_ivf else value})
        params, keep = search_params(index, trial, tombstones, 2)
        scores, found = index.search(queries, 3, params=params)
        del keep
        recall = _loo_recall(scores, found, query_ids, exact_scores, exact_ids)
        chosen = value
        if recall >= target:
            break
    if is_ivf:
        meta.nprobe, meta.ef_search = int(chosen), None
    else:
        meta.ef_search, meta.nprobe = int(chosen), None
    meta.tuned_recall = float(recall)


def _live_mask(index: faiss.Index, meta: IndexMeta) -> np.ndarray:
    ids = stored_ids(index)
    if not meta.tombstones:
        return np.ones(len(ids), bool)
    return ~np.isin(ids, np.asarray(meta.tombstones, dtype=np.int64))


def _doubling(start: int, stop: int) -> list[int]:
    out, value = [], max(1, start)
    while value < stop:
        out.append(value)
        value *= 2
    out.append(stop)
    return out


def _exact_neighbours(vectors, ids, queries, query_ids, metric):
    """Each query's nearest *other* stored vector by exact search: (score, id) per query."""
    flat = faiss.IndexFlat(vectors.shape[1], metric)
    flat.add(vectors)
    scores, pos = flat.search(queries, 3)
    found = np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)
    return _first_other(scores, found, query_ids)


def _first_other(scores: np.ndarray, found: np.ndarray, query_ids: np.ndarray):
    best_scores = np.full(len(query_ids), np.nan, np.float32)
    best_ids = np.full(len(query_ids), -1, np.int64)
    for i, qid in enumerate(query_ids):
        for s, f in zip(scores[i], found[i]):
            if f >= 0 and f != qid:
                best_scores[i], best_ids[i] = s, f
                break
    return best_scores, best_ids


def _loo_recall(scores, found, query_ids, exact_scores, exact_ids) -> float:
    """Share of queries whose approximate nearest other vector is the exact one (ties count)."""
    got_scores, got_ids = _first_other(scores, found, query_ids)
    same = (got_ids == exact_ids) | (np.abs(got_scores - exact_scores) <= 1e-5 * np.maximum(1.0, np.abs(exact_scores)))
    return float(np.mean(same))
