"""``PP-ShiTuV2``: mainbody detection -> one feature per box -> faiss search, as PaddleX runs it.

Config keys are PaddleX's: ``index``, ``det_threshold`` (0.5), ``rec_threshold`` (0.5),
``rec_topk`` (5), ``SubModules.Detection`` / ``SubModules.Recognition``. Per call:
``predict(input, index=IndexData|dir, det_threshold=, rec_threshold=, rec_topk=)``.
An image with no detection is recognised as one whole-image box (det_score 0), as in PaddleX.

Differences from PaddleX 3.7.2, all deliberate:

- ``rec_threshold`` is a minimum similarity for ``IP`` indexes and a maximum squared
  distance for ``L2`` ones (PaddleX rejects *near* L2 matches), and it is applied to every
  one of the ``rec_topk`` hits, not only the first;
- the feature batch size does not change the vectors (see :mod:`.feature_model`);
- the YAML's ``index: None`` means "no index" (PaddleX reads the string "None" as a path);
- all the crops of a batch of images go through the feature model together.

``build_index`` / ``append_index`` / ``remove_index`` are PaddleX's methods; they embed the
gallery with the recognition model and delegate to :mod:`pipelines.retrieval`. Unreadable
gallery images are skipped, warned about and listed in ``IndexData.skipped``.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from typing import Any, Sequence

import numpy as np

from ..base import BasePipeline, Prepared
from ..io.inputs import InputItem
from ..io.uri import parse_uri
from ..predictors import ModelIdentity, PipelineIdentity, create_predictor, submodule
from ..predictors.detection import DetectionPredictor
from ..predictors.image_feature import FeaturePredictor
from ..retrieval import IndexData, append_index, build_index, remove_index
from ..retrieval.versions import resolve_index
from .gallery import embed_gallery
from .result import ShiTuResult

VERSION_DIR = re.compile(r"^v\d{6}$")


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None", "null"))


class ShiTuV2Pipeline(BasePipeline):
    """PaddleX's ``PP-ShiTuV2`` pipeline."""

    pipeline_name = "PP-ShiTuV2"
    result_class = ShiTuResult
    submodules = {"Detection": "object_detection", "Recognition": "image_feature"}
    primary_submodule = None  # two models: name SubModules.Detection / .Recognition explicitly

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        super().__init__(config, device)
        self.det_model: DetectionPredictor = create_predictor(
            submodule(config, "Detection"), self.settings, self.device, "object_detection"
        )
        self.rec_model: FeaturePredictor = create_predictor(
            submodule(config, "Recognition"), self.settings, self.device, "image_feature"
        )
        self.det_threshold = float(config.get("det_threshold", 0.5))
        rec_threshold = config.get("rec_threshold", 0.5)
        self.rec_threshold = None if _unset(rec_threshold) else float(rec_threshold)
        self.rec_topk = int(config.get("rec_topk", 5))
        index = config.get("index")
        self._versions: dict[str, IndexData] = {}  # loaded published versions (immutable), by resolved dir
        self.index_source, self.index = (index, None) if _unset(index) else self._resolve(index)
        self._feature_dim: int | None = None

    def _resolve(self, index: Any) -> tuple[Any, IndexData]:
        """``(source for the row labels, IndexData)``: ``root/name`` (CURRENT, read once),
        ``root/name@v000003``, a plain index folder, or an ``IndexData`` (see ``resolve_index``)."""
        resolved, _, version = resolve_index(index)
        if version is None:
            return resolved, IndexData.load(resolved)
        data = self._versions.get(resolved)
        if data is None:
            data = self._versions[resolved] = IndexData.load(resolved)
        return resolved, data

    @classmethod
    def identity(cls, config: dict[str, Any], options: dict[str, Any] | None = None) -> PipelineIdentity:
        """Both models, plus the index the labels come from (its content, not its path)."""
        models = super().identity(config, options)
        index = (options or {}).get("index")
        index = config.get("index") if _unset(index) else index
        if _unset(index):
            return models
        resolved, _, _ = resolve_index(index)
        name, version = index_label(resolved, IndexData.load(resolved))
        return PipelineIdentity(models.models, (ModelIdentity("index", name or "index", version),))

    @property
    def batch_size(self) -> int:
        return self.det_model.batch_size

    # -- per call ------------------------------------------------------------------------
    def validate_kwargs(
        self, index=None, det_threshold=None, rec_threshold=None, rec_topk=None, **kwargs: Any
    ) -> dict[str, Any]:
        source, resolved = (self.index_source, self.index) if _unset(index) else self._resolve(index)
        if resolved is None:
            raise ValueError("PP-ShiTuV2 needs an index: set `index` in the config or pass predict(..., index=DIR)")
        dim = self.feature_dim()
        if resolved.dim != dim:
            raise ValueError(f"the index holds {resolved.dim}-d vectors but the recognition model makes {dim}-d features")
        recorded = (resolved.meta.model or {}).get("sha256")
        if recorded and recorded != self.rec_model.describe()["sha256"]:
            warnings.warn("the index was built with a different recognition model; matches may be meaningless", stacklevel=3)
        return {
            "index": resolved,
            "index_label": index_label(source, resolved),
            "det_threshold": self.det_threshold if det_threshold is None else float(det_threshold),
            "rec_threshold": self.rec_threshold if rec_threshold is None else float(rec_threshold),
            "rec_topk": self.rec_topk if rec_topk is None else int(rec_topk),
            **kwargs,
        }

    def feature_dim(self) -> int:
        """The recognition model's output size (probed once on a blank image)."""
        if self._feature_dim is None:
            blank = self.rec_model.preprocess(np.full((32, 32, 3), 127, np.uint8))
            self._feature_dim = int(self.rec_model.infer([blank]).shape[1])
        return self._feature_dim

    def warm_up(self, batch: int) -> None:
        """Both models on a blank image; no search (the server may have no default index)."""
        self.feature_dim()
        self.det_model.infer([self.det_model.preprocess(np.full((64, 64, 3), 127, np.uint8))])

    def prepare(self, image: np.ndarray, item: InputItem, **kwargs: Any):
        return self.det_model.preprocess(image)

    def run_batch(
        self,
        batch: Sequence[Prepared],
        index: IndexData,
        det_threshold: float,
        rec_threshold,
        rec_topk: int,
        index_label: tuple[str | None, str] = (None, ""),
        **kwargs: Any,
    ) -> list[ShiTuResult]:
        raws = self.det_model.infer([p.payload for p in batch])
        per_image: list[list[dict[str, Any]]] = []
        crops: list[np.ndarray] = []
        for p, raw in zip(batch, raws):
            h, w = p.image.shape[:2]
            boxes = self.det_model.postprocess(raw, w, h, det_threshold)
            if not boxes:
                boxes = [{"cls_id": 0, "label": "full_img", "score": 0, "coordinate": [0, 0, w, h]}]
            per_image.append(boxes)
            crops.extend(crop_box(p.image, b["coordinate"]) for b in boxes)
        features = self.rec_model.infer([self.rec_model.preprocess(c) for c in crops])
        hits = iter(index.query(features, rec_topk, rec_threshold))
        results = []
        for p, boxes in zip(batch, per_image):
            out_boxes = []
            for box in boxes:
                hit = next(hits)
                labels, scores = hit if hit is not None else ([None], [None])
                out_boxes.append(
                    {"labels": labels, "rec_scores": scores, "det_score": box["score"], "coordinate": box["coordinate"]}
                )
            results.append(
                ShiTuResult({"input_path": p.item.uri, "boxes": out_boxes}, p.image, p.index, *index_label)
            )
        return results

    # -- index maintenance (PaddleX's pipeline methods) ---------------------------------
    def build_index(
        self,
        gallery_imgs: Any,
        gallery_label: "str | Sequence[str]",
        metric_type: str = "IP",
        index_type: str = "HNSW32",
        **kwargs: Any,
    ) -> IndexData:
        """A new index of the gallery (``gallery_label``: a label file, or one label per image)."""
        features, labels, skipped = self.embed_gallery(gallery_imgs, gallery_label)
        data = build_index(features, labels, index_type, metric_type, model=self.rec_model.describe(), **kwargs)
        data.skipped = skipped
        return data

    def append_index(self, gallery_imgs: Any, gallery_label: "str | Sequence[str]", index: "IndexData | str") -> IndexData:
        data = IndexData.load(index)
        features, labels, skipped = self.embed_gallery(gallery_imgs, gallery_label)
        out = append_index(features.reshape(-1, data.dim), labels, data)
        out.skipped = skipped
        return out

    def remove_index(self, remove_ids: Any, index: "IndexData | str", labels: Sequence[str] | None = None) -> IndexData:
        return remove_index(remove_ids, index, labels=labels)

    def embed_gallery(
        self, gallery_imgs: Any, gallery_label: "str | Sequence[str]"
    ) -> tuple[np.ndarray, list[str], list[dict[str, str]]]:
        """``(features, labels, skipped)`` of a gallery; see :func:`.gallery.embed_gallery`."""
        return embed_gallery(self.rec_model, gallery_imgs, gallery_label, self.load_workers, self.prefetch)


def index_label(source: Any, data: IndexData) -> tuple[str | None, str]:
    """``(index_name, index_version)`` for rows: where the index came from, and which content.

    A versioned layout ``<root>/<name>/v000003`` gives ``(name, "v000003")``; any other folder
    gives its own name and ``sha-`` + the first 12 hex digits of the vectors' checksum, so two
    different indexes never share a version label. An in-memory index has no name.
    """
    checksum = (data.meta.checksums or {}).get("vector.index") or hashlib.sha256(data.index_bytes).hexdigest()
    content = f"sha-{checksum[:12]}"
    if not isinstance(source, str):
        return None, content
    parts = parse_uri(source).path.rstrip("/").split("/")
    if len(parts) >= 2 and VERSION_DIR.match(parts[-1]):
        return parts[-2], parts[-1]
    return parts[-1] or None, content


def crop_box(image: np.ndarray, coordinate: Sequence[float]) -> np.ndarray:
    """The box's pixels (PaddleX truncates coordinates to ints); never empty."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in coordinate)
    x1, y1 = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
    x2, y2 = max(min(x2, w), x1 + 1), max(min(y2, h), y1 + 1)
    return image[y1:y2, x1:x2]
