"""Gallery features as data: galleries -> entries (uri, etag, label) -> the ``features`` Delta table.

A feature is keyed by ``(image_uri, etag, model_sha256)``: it is computed once per image
content and recognition model, by sharded Prefect tasks (:data:`features_shard`), and every
index build/append/refresh reads it from the table. Rebuilding with another index type or
metric recomputes nothing; a changed image (new etag) or another model computes anew.

Galleries (:func:`gallery_entries`):

- a label file: ``path<whitespace>label`` per line (:mod:`pipelines.retrieval.gallery`),
  paths relative to ``gallery_root`` or the file's folder;
- a manifest (``.csv``/``.tsv``/``.parquet``/...) with a ``label`` column;
- a folder / prefix holding exactly one label file (``*.txt``) at its top level.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.inputs import InputItem
from pxflow.pipelines.predictors.image_feature import EMBED_BATCH
from pxflow.pipelines.io.manifest import MANIFEST_SUFFIXES, iter_entries
from pxflow.pipelines.io.storage import Storage
from pxflow.pipelines.io.uri import join_uri
from pxflow.pipelines.pp_shitu_v2.gallery import recognition_config, recognition_identity
from pxflow.pipelines.retrieval.gallery import label_file_dir, parse_gallery_lines

from .lake import Lake, append_features, read_features
from .shards import canonical_json

log = logging.getLogger(__name__)

LABEL_FILE_SUFFIXES = (".txt",)


# ---------------------------------------------------------------- galleries

def _label_file_of(prefix: str, storage: Storage) -> str:
    candidates = [
        info.uri for info in storage.list_objects(prefix, suffixes=LABEL_FILE_SUFFIXES)
        if "/" not in info.uri[len(prefix.rstrip("/")) + 1 :]
    ]
    if len(candidates) != 1:
        raise ValueError(
            f"gallery {prefix}: expected exactly one label file (*.txt, 'path<TAB>label' lines) at its top level, "
            f"found {len(candidates)}{': ' + ', '.join(candidates[:5]) if candidates else ''}"
        )
    return candidates[0]


def gallery_entries(gallery: str, storage: Storage, gallery_root: str | None = None) -> list[dict[str, Any]]:
    """``[{"uri", "label", "etag"}]`` of a gallery (label file, manifest with a ``label`` column, or a
    prefix with one label file); ``etag`` is None for an image that does not exist."""
    gallery = str(gallery)
    lower = gallery.lower()
    if storage.is_dir(gallery) and not lower.endswith(LABEL_FILE_SUFFIXES):
        gallery = _label_file_of(gallery, storage)
        lower = gallery.lower()
    if lower.endswith(MANIFEST_SUFFIXES) and not lower.endswith(LABEL_FILE_SUFFIXES):
        pairs = []
        for entry in iter_entries(gallery, storage):
            label = entry.extra.get("label")
            if label is None or str(label).strip() == "":
                raise ValueError(f"{gallery}: manifest row {entry.uri!r} has no 'label' column value")
            pairs.append((entry.uri, str(label)))
        base = None
    else:
        try:
            text = storage.read_bytes(gallery).decode("utf-8")
        except InputError as exc:
            raise ValueError(f"gallery label file {gallery}: {exc.error_type}: {exc.message}") from None
        base = gallery_root or label_file_dir(gallery)
        pairs = [(join_uri(base, path), label) for path, label in parse_gallery_lines(text, gallery)]
    etags = _listed_etags(base, storage) if base else {}
    out = []
    for uri, label in pairs:
        etag = etags.get(uri)
        if etag is None:
            info = storage.stat(uri)
            etag = info.etag if info is not None else None
        out.append({"uri": uri, "label": label, "etag": etag})
    return out


def _listed_etags(base: str, storage: Storage) -> dict[str, str]:
    """One listing of the gallery folder instead of a stat per image."""
    try:
        return {info.uri: info.etag for info in storage.list_objects(base) if info.etag}
    except Exception:  # an unlistable prefix: fall back to stats
        return {}


# ---------------------------------------------------------------- the recognition model

#: threads reading + decoding + preprocessing gallery images ahead of the model
LOAD_WORKERS = 4

_models: dict[tuple, Any] = {}
_models_lock = threading.Lock()


def feature_model(pipeline: str = "PP-ShiTuV2", rec_model_dir: str | None = None, backend: str | None = None, device: str | None = None):
    """The pipeline config's ``SubModules.Recognition`` model (``rec_model_dir`` overrides), loaded once per process.

    Cached by the model files' checksum (not their path): a model directory whose files were
    replaced is loaded anew instead of serving features of the old weights under the new
    checksum. The checksum itself is cached by file stat (:meth:`ModelSpec.sha256`).
    """
    from pxflow.pipelines.predictors import create_predictor
    from pxflow.pipelines.settings import PxflowSettings

    config, section = recognition_config(pipeline, rec_model_dir, backend)
    key = (recognition_identity(section).sha256, canonical_json(config.get("Pxflow")), device)
    with _models_lock:
        found = _models.get(key)
        if found is None:
            settings = PxflowSettings.from_mapping(config.get("Pxflow"))
            found = _models[key] = create_predictor(section, settings, device or "cpu", "image_feature")
        return found


# ---------------------------------------------------------------- computing features

def missing_entries(lake: Lake, entries: Sequence[dict[str, Any]], model_sha256: str) -> list[dict[str, Any]]:
    """The entries whose ``(uri, etag)`` has no feature for this model yet (and that exist)."""
    have = read_features(lake, model_sha256, [e["uri"] for e in entries])
    seen: set[tuple[str, str]] = set()
    out = []
    for e in entries:
        key = (e["uri"], e["etag"])
        if e["etag"] is None or key in have or key in seen:
            continue
        seen.add(key)
        out.append(dict(e))
    return out


def compute_features(
    entries: Sequence[dict[str, Any]], model: Any, storage: Storage, lake: Lake
) -> dict[str, Any]:
    """Embed ``entries`` and append one row each to the features table (plain Python; the task wraps it).

    The etag stored is the one the read saw (a file replaced since listing gets its new etag).
    Unreadable images are returned in ``failed``, never fatal.
    """
    desc = model.describe()
    items = [InputItem(e["uri"], storage=storage) for e in entries]
    # reads, decodes and preprocessing run ahead of the model in threads (as predict() does)
    embedded = model.embed_inputs(items, workers=LOAD_WORKERS, window=2 * max(EMBED_BATCH, model.batch_size))
    failed = [{"uri": entries[i]["uri"], "error_type": kind, "message": message} for i, kind, message in embedded.failed]
    kept = [(entries[i]["uri"], str(items[i].meta.get("etag") or entries[i]["etag"])) for i in embedded.kept]
    if kept:
        features = embedded.features
        now = time.time()
        rows = pa.table(
            {
                "image_uri": [u for u, _ in kept],
                "etag": [t for _, t in kept],
                "model_sha256": [desc["sha256"]] * len(kept),
                "model_name": [desc.get("name")] * len(kept),
                "dim": [int(features.shape[1])] * len(kept),
                "feature": pa.FixedSizeListArray.from_arrays(features.astype(np.float32).reshape(-1), int(features.shape[1])).cast(pa.list_(pa.float32())),
                "computed_at": [now] * len(kept),
            }
        )
        append_features(lake, rows)
    return {"computed": len(kept), "failed": failed, "computed_keys": [list(k) for k in kept]}


def feature_matrix(
    lake: Lake, entries: Sequence[dict[str, Any]], model_sha256: str
) -> tuple[np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]:
    """``(features [n, D], entries found, entries missing)`` from the table, in ``entries`` order.

    An entry whose listed etag has no row but whose uri has exactly one row of another etag
    (the file changed between listing and reading) takes that row's etag.
    """
    have = read_features(lake, model_sha256, [e["uri"] for e in entries])
    by_uri: dict[str, list[tuple[str, list[float]]]] = {}
    for (uri, etag), vec in have.items():
        by_uri.setdefault(uri, []).append((etag, vec))
    rows, found, missing = [], [], []
    for e in entries:
        vec = have.get((e["uri"], e["etag"]))
        if vec is None:
            missing.append(dict(e))
            continue
        rows.append(vec)
        found.append(dict(e))
    dim = len(rows[0]) if rows else 0
    return np.asarray(rows, np.float32).reshape(len(rows), dim), found, missing


def shard_entries(entries: Sequence[dict[str, Any]], shard_size: int) -> list[list[dict[str, Any]]]:
    size = max(1, int(shard_size))
    return [list(entries[i : i + size]) for i in range(0, len(entries), size)]


def _features_shard(
    entries: list[dict[str, Any]], lake_root: str, model_spec: dict[str, Any], s3_block: str | None = None
) -> dict[str, Any]:
    from .credentials import storage_for

    storage = storage_for(s3_block)
    model = feature_model(**model_spec)
    return compute_features(entries, model, storage, Lake(lake_root, storage))


def _make_task():
    from prefect import task

    return task(name="index-features-shard", retries=2, retry_delay_seconds=1)(_features_shard)


#: the Prefect task: embed one shard of gallery entries into the features table
features_shard = _make_task()
