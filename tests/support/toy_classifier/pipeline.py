"""``toy_classifier``: one label per image, no boxes, no masks."""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import Field

from pxflow.pipelines.base import Prepared, SinglePredictorPipeline
from pxflow.pipelines.options import PredictOptions
from pxflow.pipelines.results import BaseResult
from pxflow.pipelines.results.records import ObjectRecord


class ClassResult(BaseResult):
    """PaddleX's classification result shape: ``{input_path, class_ids, scores, label_names}``."""

    def object_records(self) -> list[ObjectRecord]:
        return [
            ObjectRecord(cls_id=c, label=name, score=s)
            for c, s, name in zip(self.data["class_ids"], self.data["scores"], self.data["label_names"])
        ]


class ToyOptions(PredictOptions):
    """``predict(input, min_score=...)``: the toy's one option (and so ``--min-score`` on the CLIs)."""

    min_score: float = Field(0.0, ge=0.0, le=1.0, description="drop labels scoring below this")


class ToyClassifierPipeline(SinglePredictorPipeline):
    pipeline_name = "toy_classifier"
    result_class = ClassResult
    submodules = {"ImageClassification": "image_classification"}
    primary_submodule = "ImageClassification"
    default_module = "image_classification"

    def run_batch(self, batch: Sequence[Prepared], min_score: float = 0.0, **kwargs: Any) -> list[ClassResult]:
        results = []
        for p, top in zip(batch, self.model.infer([p.payload for p in batch])):
            top = [t for t in top if t["score"] >= min_score]
            data = {
                "input_path": p.item.uri,
                "class_ids": [t["class_id"] for t in top],
                "scores": [t["score"] for t in top],
                "label_names": [t["label"] for t in top],
            }
            results.append(ClassResult(data, p.image, p.index))
        return results
