"""A pipeline whose model sleeps ``sleep_ms`` per image: fan-out benchmarks measure orchestration, not the cores.

Built on the toy classifier of ``tests/support/toy_classifier`` (its generated ONNX model gives the run a real
identity); the predictor sleeps instead of computing (sleeping releases the GIL and uses no core), then returns
one fixed label per image. Importing this module registers ``pipeline_name: sleep_classifier``
(predictor ``module_name: sleep_classification``); worker processes import it through ``PXFLOW_WORKER_IMPORTS``.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from pxflow.pipelines.predictors import register_predictor
from pxflow.pipelines.registry import register_pipeline
from pxflow.pipelines.settings import PxflowSettings
from tests.support.toy_classifier.pipeline import ToyClassifierPipeline
from tests.support.toy_classifier.predictor import ClassificationPredictor


class SleepPredictor(ClassificationPredictor):
    module_names = ("sleep_classification",)

    @classmethod
    def from_submodule(cls, sub: Mapping[str, Any], settings: PxflowSettings, device: str) -> "SleepPredictor":
        predictor = super().from_submodule(sub, settings, device)
        predictor.sleep_s = float(sub.get("sleep_ms") or 0) / 1000.0
        return predictor

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return image[:1, :1]  # nothing to compute: the sleep stands for the model

    def infer(self, tensors: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
        time.sleep(self.sleep_s * len(tensors))
        return [[{"class_id": 0, "label": self.labels[0], "score": 1.0}] for _ in tensors]


class SleepPipeline(ToyClassifierPipeline):
    pipeline_name = "sleep_classifier"
    submodules = {"ImageClassification": "sleep_classification"}
    default_module = "sleep_classification"


register_predictor("sleep_classification", "bench.sleep_pipeline:SleepPredictor")
register_pipeline("sleep_classifier", "bench.sleep_pipeline:SleepPipeline")


def write_config(path: str, model_dir: str, sleep_ms: float, batch_size: int = 50) -> str:
    import yaml

    config = {
        "pipeline_name": "sleep_classifier",
        "SubModules": {"ImageClassification": {"module_name": "sleep_classification", "model_name": "ToyClassifier",
                                               "model_dir": model_dir, "batch_size": batch_size, "topk": 1,
                                               "sleep_ms": sleep_ms}},
    }
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return path
