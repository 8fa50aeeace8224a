"""PP-ShiTuV2's PaddleX endpoints: ``/shitu-infer`` and the index endpoints ``/shitu-index-build|add|remove``.

``indexKey`` names a versioned index under the server's ``--index-root``
(:class:`pxflow.pipelines.retrieval.versions.IndexRepo`): build publishes a new name,
add/remove publish new versions through the same compare-and-swap as the index flows, infer
reads CURRENT (or ``name@v000003``); nothing lives only in the server's memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any, List, Optional

import numpy as np
from pydantic import field_validator

from ..retrieval.index_data import IndexData
from ..retrieval.versions import IndexRepo, NothingToChange, VersionError, check_name, split_spec, version_number
from ..serving import ImageRequest, Request, ServingContext, ServingError, floats, parse


class ImageLabelPair(Request):
    image: str
    label: str


class BuildIndexRequest(Request):
    imageLabelPairs: List[ImageLabelPair]

    @field_validator("imageLabelPairs")
    @classmethod
    def _non_empty(cls, value):
        if not value:
            raise ValueError("needs at least one {image, label} pair")
        return value


class AddImagesToIndexRequest(BuildIndexRequest):
    indexKey: str


class RemoveImagesFromIndexRequest(Request):
    ids: List[int]
    indexKey: str


class ShiTuInferRequest(ImageRequest):
    indexKey: Optional[str] = None
    detThreshold: Optional[float] = None
    recThreshold: Optional[float] = None
    #: accepted and ignored: pxflow builds float indexes only
    hammingRadius: Optional[float] = None
    topk: Optional[int] = None


def shitu_objects(result: Any) -> list[dict[str, Any]]:
    """``detectedObjects``: ``{bbox, recResults [{label, score}], score}`` per detected object."""
    out = []
    for b in result.data.get("boxes", []):
        labels, scores = b.get("labels") or [], b.get("rec_scores") or []
        rec = [{"label": str(lab), "score": float(s)} for lab, s in zip(labels, scores) if lab is not None and s is not None]
        out.append({"bbox": floats(b["coordinate"]), "recResults": rec, "score": float(b.get("det_score") or 0.0)})
    return out


# -- helpers ------------------------------------------------------------------------------
def _repo_for(ctx: ServingContext, key: Any, *, allow_version: bool) -> tuple[IndexRepo, Optional[str]]:
    """The index ``indexKey`` names under ``--index-root`` (404 unknown, 422 malformed); blocking (storage reads)."""
    if not ctx.options.index_root:
        raise ServingError(503, "this server was started without --index-root: indexKey cannot be used")
    if not isinstance(key, str) or not key.strip():
        raise ServingError(422, "indexKey: required")
    base, version = split_spec(key.strip())
    if version and not allow_version:
        raise ServingError(422, f"indexKey: {key!r} names a version; add/remove publish on the index name ({base})")
    try:
        repo = IndexRepo(ctx.options.index_root, check_name(base))
        if version:
            version_number(version)
            if not repo.is_published(version):
                raise ServingError(404, f"indexKey: index {base!r} has no published version {version}")
        elif repo.current_version() is None:
            raise ServingError(404, f"indexKey: unknown index {key!r}")
    except VersionError as exc:
        raise ServingError(404 if "no published" in str(exc) else 422, f"indexKey: {exc}") from None
    return repo, version


def _id_map(repo: IndexRepo, manifest: dict[str, Any]) -> dict[str, str]:
    data = IndexData.load(repo.version_dir(manifest["version"]), storage=repo.storage)
    return {str(k): str(v) for k, v in sorted(data.id_map.items())}


async def _gallery(ctx: ServingContext, pairs: List[ImageLabelPair]) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """Features of ``imageLabelPairs`` (all pixels admitted at once) and their sha256 for the manifest."""
    if len(pairs) > ctx.limits.max_pairs:
        raise ServingError(413, f"imageLabelPairs: {len(pairs)} pairs exceed the limit of {ctx.limits.max_pairs}")
    what = [f"imageLabelPairs.{i}.image" for i in range(len(pairs))]
    raw = [await ctx.read_image(pair.image, w) for pair, w in zip(pairs, what)]  # sequential: bounds fetches per request
    arrays = await ctx.decode_images(raw, what)
    entries = [{"sha256": hashlib.sha256(data).hexdigest()} for data in raw]
    del raw
    features, kept, skipped = await ctx.offload(ctx.pipeline.embed_gallery, arrays, [p.label for p in pairs])
    if skipped:
        raise ServingError(422, f"imageLabelPairs: {skipped[0]['error_type']}: {skipped[0]['message']}")
    return features, kept, entries


async def _publish(ctx: ServingContext, fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return await ctx.offload(fn, *args)
    except NothingToChange as exc:
        raise ServingError(422, str(exc)) from None
    except VersionError as exc:
        raise ServingError(409, str(exc)) from None


# -- endpoints ------------------------------------------------------------------------------
async def index_build(ctx: ServingContext, body: Any) -> dict[str, Any]:
    """``/shitu-index-build``: ``{imageLabelPairs}`` -> ``{indexKey, idMap}`` (a new index name, version 1)."""
    req = parse(BuildIndexRequest, body)
    if not ctx.options.index_root:
        raise ServingError(503, "this server was started without --index-root: it cannot build indexes")
    features, labels, entries = await _gallery(ctx, req.imageLabelPairs)
    key = "idx-" + uuid.uuid4().hex[:20]
    repo = IndexRepo(ctx.options.index_root, key)
    inputs = {"source": "pxflow serve", "logId": ctx.log_id, "images": entries}
    # no gallery entries are recorded as consumed: a gallery refresh never removes API images
    manifest = await _publish(ctx, repo.build, features, labels, [], ctx.options.index_type, ctx.options.metric_type,
                              ctx.pipeline.rec_model.describe(), inputs)
    return {"indexKey": key, "idMap": await asyncio.to_thread(_id_map, repo, manifest)}


async def index_add(ctx: ServingContext, body: Any) -> dict[str, Any]:
    """``/shitu-index-add``: ``{indexKey, imageLabelPairs}`` -> ``{idMap}`` (a new version)."""
    req = parse(AddImagesToIndexRequest, body)
    repo, _ = await asyncio.to_thread(_repo_for, ctx, req.indexKey, allow_version=False)
    features, labels, entries = await _gallery(ctx, req.imageLabelPairs)
    inputs = {"source": "pxflow serve", "logId": ctx.log_id, "images": entries, "model": ctx.pipeline.rec_model.describe()}
    manifest = await _publish(ctx, repo.append, features, labels, [], inputs)
    return {"idMap": await asyncio.to_thread(_id_map, repo, manifest)}


async def index_remove(ctx: ServingContext, body: Any) -> dict[str, Any]:
    """``/shitu-index-remove``: ``{indexKey, ids}`` -> ``{idMap}`` (a new version without them)."""
    req = parse(RemoveImagesFromIndexRequest, body)
    if not req.ids:
        raise ServingError(422, "ids: needs at least one id to remove")
    repo, _ = await asyncio.to_thread(_repo_for, ctx, req.indexKey, allow_version=False)
    manifest = await _publish(ctx, repo.remove, req.ids, None, {"source": "pxflow serve", "logId": ctx.log_id})
    return {"idMap": await asyncio.to_thread(_id_map, repo, manifest)}


async def infer(ctx: ServingContext, body: Any) -> dict[str, Any]:
    """``/shitu-infer``: ``{image, indexKey?, detThreshold?, recThreshold?, topk?}`` -> ``{detectedObjects, image}``."""
    req = parse(ShiTuInferRequest, body)
    kwargs: dict[str, Any] = {}
    if req.indexKey is not None:
        repo, version = await asyncio.to_thread(_repo_for, ctx, req.indexKey, allow_version=True)
        kwargs["index"] = repo.base + (f"@{version}" if version else "")
    elif ctx.pipeline.index is None:
        raise ServingError(422, "indexKey: required (the server has no default index)")
    if req.detThreshold is not None:
        kwargs["det_threshold"] = req.detThreshold
    if req.recThreshold is not None:
        kwargs["rec_threshold"] = req.recThreshold
    if req.topk is not None:
        if req.topk < 1:
            raise ServingError(422, "topk must be >= 1")
        if req.topk > ctx.limits.max_topk:
            raise ServingError(422, f"topk: {req.topk} is over the limit of {ctx.limits.max_topk} (raise it with --max-topk)")
        kwargs["rec_topk"] = req.topk
    res = await ctx.infer(req.image, kwargs, visualize=req.visualize)
    return {"detectedObjects": shitu_objects(res), "image": await ctx.picture(res, req.visualize)}
