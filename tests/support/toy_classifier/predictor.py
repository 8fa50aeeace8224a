"""The toy's predictor: a PaddleClas-style classification export (softmax scores per class)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from pxflow.pipelines.models import open_model
from pxflow.pipelines.ops.preprocess import Preprocessor, from_transform_ops
from pxflow.pipelines.predictors import Predictor
from pxflow.pipelines.settings import PxflowSettings


class ClassificationPredictor(Predictor):
    module_names = ("image_classification",)

    def __init__(self, model_name: str | None, model_dir: str | None, device: str, backend: str, threads: int | None,
                 batch_size: int, topk: int) -> None:
        loaded = open_model(model_name, model_dir, device, backend, threads)
        self.backend, self.batch_size, self.topk = loaded.backend, batch_size, topk
        config = loaded.spec.config
        self.preprocessor = Preprocessor.from_config(from_transform_ops(config["PreProcess"]["transform_ops"]))
        self.labels = list(config["PostProcess"]["Topk"]["label_list"])

    @classmethod
    def from_submodule(cls, sub: Mapping[str, Any], settings: PxflowSettings, device: str) -> "ClassificationPredictor":
        return cls(sub.get("model_name"), sub.get("model_dir"), device, settings.backend, settings.cpu_threads,
                   int(sub.get("batch_size") or 1), int(sub.get("topk") or 1))

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return self.preprocessor(image).img

    def infer(self, tensors: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
        """Top-k ``{class_id, label, score}`` per preprocessed image (the predictor contract)."""
        probs = self.backend.run({self.backend.input_names[0]: np.stack(tensors).astype(np.float32)})[0]
        out = []
        for row in probs:
            best = np.argsort(-row)[: self.topk]
            out.append([{"class_id": int(i), "label": self.labels[int(i)], "score": float(row[i])} for i in best])
        return out
