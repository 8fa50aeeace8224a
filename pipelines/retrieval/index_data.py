"""``IndexData``: a faiss index of labelled feature vectors, stored the way PaddleX stores it.

On disk (a local directory or an ``s3://`` prefix; all I/O goes through
:mod:`pipelines.io.storage`):

- ``vector.index``: ``faiss.write_index`` bytes of an ``IndexIDMap2`` whose ids are int64;
- ``id_map.yaml``: ``{id_map: {id: label}, index_type: Flat|IVF|HNSW32, metric_type: IP|L2}``;
- ``index_info.yaml``: the same mapping, under the name PaddleX's pipeline documents give
  the folder's label file ("``vector.index`` and ``index_info.yaml``");
- ``pxflow_index.json``: what PaddleX does not keep (search parameters, dimension, the
  faiss structure, the feature model, HNSW tombstones, the next free id, checksums).

``vector.index`` + ``id_map.yaml`` are exactly what PaddleX 3.7.2's ``IndexData.save``
writes (``paddlex/inference/pipelines/components/faisser.py``: ``yaml.dump`` of its
``index_info`` property, ``{index_type, metric_type, id_map}`` with int ids and str labels)
and what its ``IndexData.load`` reads, so PaddleX loads our indexes and we load its (then
the JSON is absent and is derived, search parameters included, from the index itself).
``index_info.yaml`` is written beside them for readers that follow the documents. Nothing is
ever pickled.

:meth:`IndexData.load` also reads the folders other PaddleX versions write or describe:
3.0-beta2's ``id_map.yaml`` without ``index_type`` (derived from the faiss structure), and
``index_info.yaml`` (the name PaddleX's pipeline docs give the label file) in place of
``id_map.yaml``. 3.0-beta1 / PaddleClas folders (``id_map.pkl``) and binary (``hamming``)
indexes are refused with a message saying why: a pickle is never loaded.

Each file is written atomically (temporary name, then rename/PUT); the JSON goes last and
records the checksums of the other two, so a reader that races a writer (or a crash
between files) gets :class:`IndexFormatError` instead of vectors paired with the wrong
labels. Concurrency rules are in ``docs/index.md``: searching one ``IndexData`` from many
threads is safe; mutating functions return a *new* ``IndexData`` and never touch their
input, but two writers saving into the same directory race (last one wins per file; the
checksums make the mix detectable). Versioned directories avoid that.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import faiss
import numpy as np
import yaml

from ..io import storage as _storage_module
from ..io.uri import join_uri

VECTOR_FILE = "vector.index"
ID_MAP_FILE = "id_map.yaml"
#: the label file under the name PaddleX's pipeline documents give it; written beside id_map.yaml, same bytes
INDEX_INFO_FILE = "index_info.yaml"
#: other names of the label file, read when ``id_map.yaml`` is absent
ID_MAP_ALIASES = (INDEX_INFO_FILE,)
#: PaddleX 3.0-beta1 / PaddleClas label file: a pickle, never loaded
PICKLE_ID_MAP_FILE = "id_map.pkl"
META_FILE = "pxflow_index.json"
META_FORMAT = 1

INDEX_TYPES = ("Flat", "IVF", "HNSW32")
METRIC_TYPES = ("IP", "L2")
FAISS_METRICS = {"IP": faiss.METRIC_INNER_PRODUCT, "L2": faiss.METRIC_L2}


class IndexFormatError(ValueError):
    """An index directory that is incomplete, inconsistent or torn by a concurrent write."""


@dataclass
class IndexMeta:
    """pxflow's side file: everything needed to search well that PaddleX's files do not hold."""

    dim: int
    structure: str  # faiss factory string of the index inside the IndexIDMap2 ("Flat", "IVF25,Flat", "HNSW32")
    nprobe: int | None = None  # IVF lists probed per query (tuned at build)
    ef_search: int | None = None  # HNSW candidate list size (tuned at build)
    tombstones: list[int] = field(default_factory=list)  # HNSW ids removed but still in the graph
    next_id: int = 0  # ids are never reused, so a tombstoned id can never come back
    trained_count: int = 0  # vectors the IVF centroids were trained on
    appended_count: int = 0  # vectors added after training (IVF centroids are frozen)
    model: dict[str, Any] = field(default_factory=dict)  # feature model name / sha256
    tuned_recall: float | None = None  # leave-one-out recall@1 vs exact search at the chosen parameters
    created_at: float = field(default_factory=time.time)
    checksums: dict[str, str] = field(default_factory=dict)
    format: int = META_FORMAT

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IndexMeta":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class IndexData:
    """A loaded index: the faiss ``IndexIDMap2``, ``id -> label`` and the search settings.

    ``id_map`` holds live ids only. Search with :meth:`search` (or :meth:`query`), which
    applies the tuned ``nprobe``/``efSearch`` and hides HNSW tombstones.
    """

    def __init__(self, index: faiss.Index, index_info: dict[str, Any], meta: IndexMeta | None = None) -> None:
        metric_type, index_type = str(index_info["metric_type"]), str(index_info["index_type"])
        if metric_type not in METRIC_TYPES:
            raise IndexFormatError(f"unsupported metric_type {metric_type!r} (supported: {METRIC_TYPES})")
        if index_type not in INDEX_TYPES:
            raise IndexFormatError(f"unsupported index_type {index_type!r} (supported: {INDEX_TYPES})")
        self._index = index
        self._id_map = {int(k): str(v) for k, v in (index_info.get("id_map") or {}).items()}
        self._metric_type = metric_type
        self._index_type = index_type
        self.meta = meta or derive_meta(index, self._id_map)
        self._tombstones = np.asarray(sorted(self.meta.tombstones), dtype=np.int64)
        apply_search_params(self._index, self.meta)
        #: gallery inputs that could not be read when this index was built/appended (not saved)
        self.skipped: list[dict[str, Any]] = []

    # -- PaddleX's properties ----------------------------------------------------------
    @property
    def index(self) -> faiss.Index:
        return self._index

    @property
    def id_map(self) -> dict[int, str]:
        return self._id_map

    @property
    def metric_type(self) -> str:
        return self._metric_type

    @property
    def index_type(self) -> str:
        return self._index_type

    @property
    def index_info(self) -> dict[str, Any]:
        return {"index_type": self._index_type, "metric_type": self._metric_type, "id_map": dict(self._id_map)}

    @property
    def index_bytes(self) -> bytes:
        return faiss.serialize_index(self._index).tobytes()

    # -- pxflow additions --------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self._index.d)

    def __len__(self) -> int:
        """Live (searchable) vectors."""
        return len(self._id_map)

    @property
    def labels(self) -> list[str]:
        return sorted(set(self._id_map.values()))

    def ids_for_labels(self, labels: Sequence[str]) -> list[int]:
        wanted = {str(x) for x in labels}
        return sorted(i for i, lab in self._id_map.items() if lab in wanted)

    def search(self, features: np.ndarray, topk: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss ``(scores, ids)`` of shape ``[n, topk]``; missing hits have id -1.

        Scores are inner products for ``IP`` (higher is nearer) and squared L2
        distances for ``L2`` (lower is nearer), as faiss returns them.
        """
        x = np.ascontiguousarray(np.asarray(features, dtype=np.float32).reshape(-1, self.dim))
        k = max(1, int(topk))
        if len(x) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        params, keep_alive = search_params(self._index, self.meta, self._tombstones, k)
        scores, ids = self._index.search(x, k, params=params)
        del keep_alive
        return scores, ids

    def query(
        self, features: np.ndarray, topk: int, threshold: float | None
    ) -> list[tuple[list[str], list[float]] | None]:
        """Per feature row: ``(labels, scores)`` of the hits that pass ``threshold``, or None.

        The threshold is a minimum similarity for ``IP`` and a maximum (squared) distance
        for ``L2``: far L2 matches are rejected, near ones kept (PaddleX inverts this for L2).
        Every hit is checked, not only the first.
        """
        scores, ids = self.search(features, topk)
        out: list[tuple[list[str], list[float]] | None] = []
        for row_scores, row_ids in zip(scores, ids):
            labels, kept = [], []
            for score, idx in zip(row_scores.tolist(), row_ids.tolist()):
                if idx < 0 or idx not in self._id_map:
                    continue
                if threshold is not None and not self.passes(score, threshold):
                    continue
                labels.append(self._id_map[idx])
                kept.append(float(score))
            out.append((labels, kept) if labels else None)
        return out

    def passes(self, score: float, threshold: float) -> bool:
        return score >= threshold if self._metric_type == "IP" else score <= threshold

    # -- storage -----------------------------------------------------------------------
    def save(self, save_dir: str, *, storage: Any = None) -> str:
        """Write the four files under ``save_dir`` (local path or s3 prefix); returns it.

        ``storage``: a :class:`~pipelines.io.storage.Storage` (default: the environment's).
        """
        storage = storage or _storage_module
        vector = self.index_bytes
        info = yaml.safe_dump(self.index_info, default_flow_style=False, allow_unicode=True, sort_keys=False).encode("utf-8")
        meta = IndexMeta.from_dict(asdict(self.meta))
        meta.checksums = {VECTOR_FILE: _sha256(vector), ID_MAP_FILE: _sha256(info), INDEX_INFO_FILE: _sha256(info)}
        meta_bytes = json.dumps(asdict(meta), indent=1, ensure_ascii=False).encode("utf-8")
        storage.write_bytes(join_uri(save_dir, VECTOR_FILE), vector)
        storage.write_bytes(join_uri(save_dir, ID_MAP_FILE), info)
        storage.write_bytes(join_uri(save_dir, INDEX_INFO_FILE), info)
        storage.write_bytes(join_uri(save_dir, META_FILE), meta_bytes)  # last: its checksums vouch for the others
        self.meta.checksums = meta.checksums
        #: SHA-256 of the three files as written (so a writer need not read them back to record them)
        self.file_checksums = {**meta.checksums, META_FILE: _sha256(meta_bytes)}
        return save_dir

    @classmethod
    def load(cls, index: "str | IndexData", *, storage: Any = None) -> "IndexData":
        """An ``IndexData`` from a directory (ours or PaddleX's), or the object itself.

        Every problem is an :class:`IndexFormatError` naming the directory and the file: a
        truncated ``vector.index``, invalid YAML, ids in ``id_map.yaml`` that are not the ids
        stored in the index (even with the same count).
        """
        if isinstance(index, IndexData):
            return index
        storage = storage or _storage_module
        index_dir = str(index)
        try:
            vector = storage.read_bytes(join_uri(index_dir, VECTOR_FILE))
        except Exception as exc:
            raise IndexFormatError(f"{index_dir}: not an index directory (no {VECTOR_FILE}): {exc}") from exc
        info_name, info_bytes = _read_info_file(index_dir, storage)
        meta: IndexMeta | None = None
        if storage.exists(join_uri(index_dir, META_FILE)):
            try:
                meta = IndexMeta.from_dict(json.loads(storage.read_bytes(join_uri(index_dir, META_FILE))))
            except (ValueError, TypeError) as exc:
                raise IndexFormatError(f"{index_dir}/{META_FILE}: invalid JSON: {exc}") from None
            for name, data in ((VECTOR_FILE, vector), (info_name, info_bytes)):
                expected = meta.checksums.get(name)
                if expected and expected != _sha256(data):
                    raise IndexFormatError(
                        f"{index_dir}: {name} does not match {META_FILE} (a concurrent or interrupted save); reload or rebuild"
                    )
        try:
            info = yaml.safe_load(info_bytes.decode("utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"{index_dir}/{info_name}: invalid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(info, dict):
            raise IndexFormatError(f"{index_dir}/{info_name} is not a mapping")
        if str(info.get("metric_type")) in BINARY_METRIC_TYPES:
            raise IndexFormatError(
                f"{index_dir}: metric_type {info['metric_type']!r} is a binary faiss index; pxflow supports {METRIC_TYPES} only"
            )
        missing = [k for k in ("id_map", "metric_type") if k not in info]
        if missing:
            raise IndexFormatError(f"{index_dir}/{info_name} lacks {missing}")
        if not isinstance(info["id_map"], dict) and info["id_map"] is not None:
            raise IndexFormatError(f"{index_dir}/{info_name}: id_map must be a mapping of id -> label")
        try:
            faiss_index = faiss.deserialize_index(np.frombuffer(vector, dtype=np.uint8))
        except Exception as exc:  # faiss raises RuntimeError on truncated or foreign bytes
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IndexFormatError(
                f"{index_dir}/{VECTOR_FILE}: not a readable faiss index ({len(vector)} bytes; truncated or corrupt?): {first}"
            ) from None
        if "index_type" not in info:  # PaddleX 3.0-beta2 wrote {metric_type, id_map} only
            info["index_type"] = index_type_of(faiss_index)
        info["id_map"] = info["id_map"] or {}
        n_tomb = len(meta.tombstones) if meta else 0
        if faiss_index.ntotal != len(info["id_map"]) + n_tomb:
            raise IndexFormatError(
                f"{index_dir}: {faiss_index.ntotal} vectors but {len(info['id_map'])} labels (+{n_tomb} tombstones)"
            )
        check_ids(faiss_index, info["id_map"], meta.tombstones if meta else (), f"{index_dir}/{info_name}")
        return cls(faiss_index, info, meta)


BINARY_METRIC_TYPES = ("hamming", "jaccard")


def check_ids(index: faiss.Index, id_map: dict, tombstones: Sequence[int] = (), source: str = ID_MAP_FILE) -> None:
    """Raise :class:`IndexFormatError` unless the ids stored in ``index`` are exactly ``id_map``'s plus the tombstones.

    A count check alone misses an ``id_map.yaml`` whose ids were shifted (same count, wrong
    ids), which would label every hit with a neighbour's label or none.
    """
    if not isinstance(faiss.downcast_index(index), (faiss.IndexIDMap, faiss.IndexIDMap2)):
        raise IndexFormatError(f"{source}: the faiss index has no id map (PaddleX writes an IndexIDMap2)")
    try:
        labelled = {int(k) for k in id_map}
    except (TypeError, ValueError):
        raise IndexFormatError(f"{source}: ids must be integers") from None
    stored = set(stored_ids(index).tolist()) if index.ntotal else set()
    expected = labelled | {int(t) for t in tombstones}
    if stored != expected:
        missing, extra = sorted(expected - stored), sorted(stored - expected)
        raise IndexFormatError(
            f"{source}: ids do not match the ids stored in {VECTOR_FILE} "
            f"(labelled but not stored: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
            f"stored but not labelled: {extra[:5]}{'...' if len(extra) > 5 else ''})"
        )


def _read_info_file(index_dir: str, storage: Any = None) -> tuple[str, bytes]:
    """``(file name, bytes)`` of the label file: ``id_map.yaml``, else one of :data:`ID_MAP_ALIASES`."""
    storage = storage or _storage_module
    errors = []
    for name in (ID_MAP_FILE, *ID_MAP_ALIASES):
        try:
            return name, storage.read_bytes(join_uri(index_dir, name))
        except Exception as exc:  # missing (local FileNotFoundError, S3 NoSuchKey ...)
            errors.append(exc)
    try:
        has_pickle = storage.exists(join_uri(index_dir, PICKLE_ID_MAP_FILE))
    except Exception:
        has_pickle = False
    if has_pickle:
        raise IndexFormatError(
            f"{index_dir}: holds {VECTOR_FILE} + {PICKLE_ID_MAP_FILE} (PaddleX 3.0-beta1 / PaddleClas format); the labels "
            "are a pickle, which pxflow never loads (unpickling runs code). Rebuild the index from the gallery "
            "(`pxflow index build`), or convert the pickle to id_map.yaml yourself where you trust it"
        )
    names = " or ".join((ID_MAP_FILE, *ID_MAP_ALIASES))
    raise IndexFormatError(f"{index_dir}: not an index directory ({VECTOR_FILE} + {names}): {errors[0]}")


def index_type_of(index: faiss.Index) -> str:
    """PaddleX's ``index_type`` name (``Flat`` / ``IVF`` / ``HNSW32``) of a faiss index."""
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexIVF):
        return "IVF"
    if isinstance(inner, faiss.IndexHNSW):
        return "HNSW32"
    return "Flat"


# ---------------------------------------------------------------- faiss helpers

def inner_index(index: faiss.Index) -> faiss.Index:
    """The index inside an ``IndexIDMap``/``IndexIDMap2``, downcast to its concrete type."""
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.downcast_index(index.index)
    return index


def structure_of(index: faiss.Index) -> str:
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexIVF):
        return f"IVF{inner.nlist},Flat"
    if isinstance(inner, faiss.IndexHNSW):
        return f"HNSW{inner.hnsw.nb_neighbors(1)}"
    return "Flat"


def stored_ids(index: faiss.Index) -> np.ndarray:
    """The int64 ids of an ``IndexIDMap2`` in internal order."""
    return faiss.vector_to_array(faiss.downcast_index(index).id_map).astype(np.int64)


def stored_vectors(index: faiss.Index) -> np.ndarray:
    """All stored vectors in internal order, without modifying ``index``.

    IVF cannot ``reconstruct`` without a direct map (and an array direct map forbids
    ``remove_ids``), so IVF-Flat vectors are read straight from the inverted lists.
    """
    inner = inner_index(index)
    n, d = inner.ntotal, inner.d
    if not n:
        return np.zeros((0, d), np.float32)
    if isinstance(inner, faiss.IndexIVF):
        invlists = inner.invlists
        if invlists.code_size != 4 * d:
            raise IndexFormatError(f"only IVF-Flat indexes are supported, got {structure_of(index)}")
        out = np.empty((n, d), np.float32)
        for lst in range(inner.nlist):
            size = invlists.list_size(lst)
            if size:
                pos = faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy()
                codes = faiss.rev_swig_ptr(invlists.get_codes(lst), size * invlists.code_size).copy()
                out[pos] = codes.view(np.float32).reshape(size, d)
        return out
    return inner.reconstruct_n(0, n)


def derive_meta(index: faiss.Index, id_map: dict[int, str]) -> IndexMeta:
    """Metadata for an index written without our side file (PaddleX's): tune it now."""
    from .tuning import tune_search_params  # tuning imports this module

    ids = stored_ids(index) if index.ntotal else np.zeros(0, np.int64)
    meta = IndexMeta(
        dim=int(index.d),
        structure=structure_of(index),
        next_id=int(max(ids.max() + 1 if len(ids) else 0, max(id_map, default=-1) + 1)),
        trained_count=int(index.ntotal),
    )
    tune_search_params(index, meta, index.metric_type)
    return meta


def apply_search_params(index: faiss.Index, meta: IndexMeta) -> None:
    """Store the tuned parameters in the faiss index itself, so plain faiss/PaddleX use them too."""
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexIVF) and meta.nprobe:
        inner.nprobe = int(meta.nprobe)
    if isinstance(inner, faiss.IndexHNSW) and meta.ef_search:
        inner.hnsw.efSearch = int(meta.ef_search)


def search_params(index: faiss.Index, meta: IndexMeta, tombstones: np.ndarray, k: int):
    """Per-call ``SearchParameters`` (explicit nprobe/efSearch; a selector hiding tombstones).

    Returns ``(params, objects to keep alive during the search)``: the SWIG wrappers do
    not own the selector, so it must outlive the call.
    """
    inner = inner_index(index)
    sel = keep = None
    if len(tombstones):
        keep = faiss.IDSelectorBatch(tombstones)
        sel = faiss.IDSelectorNot(keep)
    if isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=int(meta.nprobe or inner.nprobe))
    elif isinstance(inner, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=max(int(meta.ef_search or inner.hnsw.efSearch), k))
    elif sel is None:
        return None, None
    else:
        params = faiss.SearchParameters()
    if sel is not None:
        params.sel = sel
    return params, (keep, sel)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
