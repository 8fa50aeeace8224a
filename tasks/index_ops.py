"""Versioned-index operations as Prefect tasks: each loads CURRENT, writes a version, validates, publishes.

The work is :class:`pxflow.pipelines.retrieval.versions.IndexRepo` (plain Python, no
Prefect); these functions add what a task knows: the storage from an S3 block name, the
features from the ``features`` Delta table (never recomputed here), and the flow run id
recorded in each manifest. Every publish is a compare-and-swap on ``CURRENT``, so these
tasks are safe even without the flows' one-writer-per-name concurrency limit; the limit only
saves the work a losing writer would redo.
"""

from __future__ import annotations

from typing import Any, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from pxflow.pipelines.io.uri import join_uri
from pxflow.pipelines.retrieval.versions import IndexRepo, VersionError, refresh_change

from .credentials import storage_for
from .features import feature_matrix
from .lake import Lake, read_features

FEATURES_DIR = "_lake"


def features_lake(root: str, s3_block: str | None = None, features_root: str | None = None) -> Lake:
    """The lake holding the ``features`` table: ``<root>/_lake`` unless ``features_root`` says otherwise."""
    return Lake(features_root or join_uri(root, FEATURES_DIR), storage_for(s3_block))


def repo_for(root: str, name: str, s3_block: str | None = None, flow_run_id: str | None = None) -> IndexRepo:
    return IndexRepo(root, name, storage_for(s3_block), flow_run_id=flow_run_id)


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    keep = ("name", "version", "parent", "operation", "ntotal", "live", "next_id", "structure", "metric_type", "index_type", "created_at")
    return {**{k: manifest.get(k) for k in keep}, "labels": len(manifest.get("labels") or {}), "inputs": manifest.get("inputs")}


def _gallery_vectors(
    repo, lake_root: str, entries: Sequence[dict[str, Any]], model: dict[str, Any], inputs: dict[str, Any]
) -> tuple[Any, list[str], list[dict[str, Any]]]:
    """``(features, labels, consumed entries)`` of the gallery's readable images, from the features table."""
    features, found, _ = feature_matrix(Lake(lake_root, repo.storage), entries, model["sha256"])
    if not found:
        raise ValueError(f"gallery {inputs.get('gallery')}: no readable images")
    return features, [e["label"] for e in found], [{"uri": e["uri"], "etag": e["etag"]} for e in found]


def build_version(
    root: str, name: str, lake_root: str, entries: Sequence[dict[str, Any]], model: dict[str, Any], index_type: str,
    metric_type: str, inputs: dict[str, Any], s3_block: str | None = None, flow_run_id: str | None = None,
) -> dict[str, Any]:
    repo = repo_for(root, name, s3_block, flow_run_id)
    features, labels, consumed = _gallery_vectors(repo, lake_root, entries, model, inputs)
    return _summary(repo.build(features, labels, consumed, index_type, metric_type, model, inputs))


def append_version(
    root: str, name: str, lake_root: str, entries: Sequence[dict[str, Any]], model: dict[str, Any], inputs: dict[str, Any],
    s3_block: str | None = None, flow_run_id: str | None = None,
) -> dict[str, Any]:
    repo = repo_for(root, name, s3_block, flow_run_id)
    features, labels, consumed = _gallery_vectors(repo, lake_root, entries, model, inputs)
    return _summary(repo.append(features, labels, consumed, {**inputs, "model": model}))


def remove_version(
    root: str, name: str, ids: Sequence[int] | None, labels: Sequence[str] | None, s3_block: str | None = None,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    return _summary(repo_for(root, name, s3_block, flow_run_id).remove(ids, labels))


def rollback_version(root: str, name: str, version: str, s3_block: str | None = None, flow_run_id: str | None = None) -> dict[str, Any]:
    return _summary(repo_for(root, name, s3_block, flow_run_id).rollback(version))


def refresh_version(
    root: str, name: str, lake_root: str, entries: Sequence[dict[str, Any]], model: dict[str, Any], inputs: dict[str, Any],
    s3_block: str | None = None, flow_run_id: str | None = None,
) -> dict[str, Any]:
    repo = repo_for(root, name, s3_block, flow_run_id)
    features = read_features(Lake(lake_root, repo.storage), model["sha256"], [e["uri"] for e in entries])

    def apply(current, manifest):
        if current is None:
            raise VersionError(f"{repo.base}: nothing to refresh; build the index first")
        recorded = (manifest.get("model") or {}).get("sha256")
        if recorded and recorded != model["sha256"]:
            raise VersionError(f"{repo.base}: built with recognition model {recorded[:12]}, refresh uses {model['sha256'][:12]}; rebuild instead")
        return refresh_change(current, manifest, entries, features)

    return _summary(repo.apply("refresh", apply, inputs))


def gc_versions(root: str, name: str, keep: int, s3_block: str | None = None) -> dict[str, Any]:
    return repo_for(root, name, s3_block).gc(keep=keep)


def _as_task(fn, name: str):
    return task(name=name, cache_policy=NO_CACHE)(fn)


index_build_task = _as_task(build_version, "index-build-version")
index_append_task = _as_task(append_version, "index-append-version")
index_remove_task = _as_task(remove_version, "index-remove-version")
index_rollback_task = _as_task(rollback_version, "index-rollback-version")
index_refresh_task = _as_task(refresh_version, "index-refresh-version")
index_gc_task = _as_task(gc_versions, "index-gc")
