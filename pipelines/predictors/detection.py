"""The detection predictor: preprocessing from its ``inference.yml``, a backend, box postprocessing.

Serves PaddleX's ``object_detection`` and ``small_object_detection`` modules (PicoDet,
PP-YOLOE+, RT-DETR ... exports; PP-ShiTuV2's mainbody detector is one too). Pipelines
compose it: plain detection, sliced small-object detection, PP-ShiTu's first stage.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..models import open_model
from ..models.backends import batch_sizes
from ..ops.boxes import Threshold, clip_boxes, filter_by_threshold, label_for, parse_threshold, split_by_counts
from ..ops.preprocess import Preprocessor, Resize, Sample, to_batch
from ..settings import PxflowSettings
from .base import Predictor


class BoxPredictor(Predictor):
    """What box-producing predictors share: the model, its preprocessing, labels and thresholds.

    Subclasses define :meth:`infer` (their raw output differs: rows, or rows plus masks).
    """

    def __init__(
        self,
        model_name: str | None = None,
        model_dir: str | None = None,
        device: str = "cpu",
        backend: str = "auto",
        cpu_threads: int | None = None,
        batch_size: int = 1,
        threshold: Threshold | None = None,
        img_size: int | Sequence[int] | None = None,
    ) -> None:
        loaded = open_model(model_name, model_dir, device, backend, cpu_threads)
        self.spec, self.model_name, self.backend = loaded.spec, loaded.model_name, loaded.backend
        self.preprocessor = Preprocessor.from_config(self.spec.preprocess)
        if img_size is not None:
            size = [img_size, img_size] if isinstance(img_size, int) else list(img_size)
            for op in self.preprocessor.ops:
                if isinstance(op, Resize):
                    op.target_h, op.target_w = int(size[0]), int(size[1])
        self.labels = self.spec.label_list
        self.batch_size = max(1, int(batch_size))
        parsed = parse_threshold(threshold)
        self.threshold: Threshold = parsed if parsed is not None else self.spec.draw_threshold

    def preprocess(self, image_bgr: np.ndarray) -> Sample:
        return self.preprocessor(image_bgr)

    @classmethod
    def from_submodule(cls, sub: Mapping[str, Any], settings: PxflowSettings, device: str):
        """Build from a PaddleX ``SubModules.<X>`` section and the ``Pxflow`` settings."""
        return cls(
            model_name=sub.get("model_name"),
            model_dir=sub.get("model_dir"),
            device=device,
            backend=settings.backend,
            cpu_threads=settings.cpu_threads,
            batch_size=int(sub.get("batch_size") or 1),
            threshold=sub.get("threshold"),
            img_size=sub.get("img_size"),
        )


class DetectionPredictor(BoxPredictor):
    """Load once, then :meth:`preprocess` per image (any thread) and :meth:`infer` per batch."""

    module_names = ("object_detection", "small_object_detection", "mainbody_detection")

    def infer(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        """Raw ``[n_i, 6]`` rows per sample (original-image pixels), before thresholding."""
        out: list[np.ndarray] = []
        start = 0
        for size in batch_sizes(len(samples), self.batch_size, self.backend.max_batch):
            chunk = samples[start : start + size]
            start += size
            outputs = self.backend.run(to_batch(chunk))
            counts = outputs[1] if len(outputs) > 1 else None
            out.extend(split_by_counts(outputs[0], counts, len(chunk)))
        return out

    def postprocess(self, raw: np.ndarray, width: int, height: int, threshold: Threshold | None = None) -> list[dict[str, Any]]:
        """Threshold, clip to the image, drop empty boxes; PaddleX's box dicts."""
        thr = parse_threshold(threshold)
        rows = clip_boxes(filter_by_threshold(raw[:, :6], self.threshold if thr is None else thr), width, height)
        return [
            {
                "cls_id": int(r[0]),
                "label": label_for(int(r[0]), self.labels),
                "score": float(r[1]),
                "coordinate": [float(r[2]), float(r[3]), float(r[4]), float(r[5])],
            }
            for r in rows
        ]

    def detect(self, images: Sequence[np.ndarray], threshold: Threshold | None = None) -> list[list[dict[str, Any]]]:
        """Preprocess, infer and postprocess a list of BGR images (for pipelines that chain a detector)."""
        samples = [self.preprocess(img) for img in images]
        raws = self.infer(samples)
        return [self.postprocess(raw, img.shape[1], img.shape[0], threshold) for raw, img in zip(raws, images)]
