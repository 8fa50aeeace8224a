"""``open_vocabulary_segmentation``: SAM-H_box / SAM-H_point, as PaddleX runs them, plus chained prompts.

``predict(input, prompt_type="box"|"point", prompt=[[...], ...])`` segments
each image once per prompt. With ``Pxflow.prompts_from`` set and no
``prompt`` given, another pipeline (any whose results carry ``boxes``:
object_detection, instance_segmentation ...) runs first and its boxes become
the box prompts of the same image: masks for any detector, in bulk.

Prompts are checked before any input is read (``ValueError``); a prompt that
leaves a particular image makes that image an ``invalid_prompt`` error result
and the run goes on. Models load on first use, so a box-only run never loads
the point model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..base import BasePipeline, Prepared
from ..config import load_config
from ..io.errors import InputError
from ..ops.preprocess import Sample
from ..results import BaseResult
from .model import LazySam, SamModel
from .prompts import PROMPT_TYPES, outside_image, parse_prompts
from .result import SamSegResult

SUBMODULES = {"box": "BoxPromptSegmentation", "point": "PointPromptSegmentation"}


@dataclass
class _Payload:
    sample: Sample
    detector_payload: Any = None


class OpenVocabularySegmentationPipeline(BasePipeline):
    pipeline_name = "open_vocabulary_segmentation"

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        super().__init__(config, device)
        subs = config.get("SubModules") or {}
        px = config.get("Pxflow") or {}
        self.models: dict[str, LazySam] = {}
        for kind, name in SUBMODULES.items():
            if subs.get(name):
                self.models[kind] = LazySam(lambda k=kind, s=subs[name]: SamModel.from_submodule(k, s, px, self.device))
        if not self.models:
            raise ValueError(f"config has no SubModules.{SUBMODULES['box']} or SubModules.{SUBMODULES['point']} section")
        self.detector, self.detector_options = self._build_detector(px.get("prompts_from"))

    # -- chained mode -------------------------------------------------------------------------
    def _build_detector(self, spec: dict[str, Any] | None):
        if not spec:
            return None, {}
        if "pipeline" not in spec:
            raise ValueError("Pxflow.prompts_from needs 'pipeline' (a pipeline name or YAML path)")
        from ..registry import pipeline_class

        det_config = load_config(spec["pipeline"], spec.get("config") or {})
        det_config["Pxflow"].update({k: v for k, v in (self.config.get("Pxflow") or {}).items() if k in ("backend", "cpu_threads")})
        detector = pipeline_class(det_config["pipeline_name"])(det_config, device=self.device)
        labels = spec.get("labels")
        options = {
            "threshold": spec.get("threshold"),
            "labels": None if labels is None else {str(x) for x in labels},
        }
        return detector, options

    def _detected_prompts(self, batch: Sequence[Prepared]) -> list[tuple[np.ndarray, list[dict[str, Any]]] | BaseResult]:
        kwargs = self.detector.validate_kwargs(threshold=self.detector_options["threshold"])
        prepared = [Prepared(p.item, p.index, p.image, p.payload.detector_payload) for p in batch]
        results = self.detector.run_batch(prepared, **kwargs)
        wanted = self.detector_options["labels"]
        out: list = []
        for res in results:
            if not res.ok:
                out.append(res)
                continue
            boxes = [
                b for b in res.data.get("boxes", []) if wanted is None or str(b.get("label")) in wanted or str(b.get("cls_id")) in wanted
            ]
            coords = np.array([b["coordinate"] for b in boxes], dtype=np.float64).reshape(-1, 4)
            keep = (coords[:, 2] > coords[:, 0]) & (coords[:, 3] > coords[:, 1])
            sources = [{"cls_id": b["cls_id"], "label": b["label"], "score": b["score"]} for b, k in zip(boxes, keep) if k]
            out.append((coords[keep], sources))
        return out

    # -- BasePipeline hooks -------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.detector.batch_size if self.detector is not None else 1

    def validate_kwargs(self, prompt_type: str = "box", prompt: Any = None, **kwargs: Any) -> dict[str, Any]:
        if prompt_type not in PROMPT_TYPES:
            raise ValueError(f"prompt_type must be 'box' or 'point', got {prompt_type!r}")
        if prompt_type not in self.models:
            raise ValueError(f"no {SUBMODULES[prompt_type]} model is configured for {prompt_type} prompts")
        self.models[prompt_type].get()  # load (or fail on a bad model dir) now, not once per image
        if prompt is None and self.detector is not None:
            if prompt_type != "box":
                raise ValueError("prompts from a detector (Pxflow.prompts_from) are boxes: use prompt_type='box'")
            return {"prompt_type": "box", "prompt": None, **kwargs}
        if prompt is None:
            raise ValueError(
                "open_vocabulary_segmentation needs prompt=[[x1, y1, x2, y2], ...] (box) or [[x, y], ...] (point), "
                "or Pxflow.prompts_from to take boxes from a detector"
            )
        return {"prompt_type": prompt_type, "prompt": parse_prompts(prompt, prompt_type), **kwargs}

    def prepare(self, image: np.ndarray, prompt_type: str = "box", prompt: np.ndarray | None = None, **kwargs: Any) -> _Payload:
        h, w = image.shape[:2]
        if prompt is not None:
            problem = outside_image(prompt, prompt_type, w, h)
            if problem:
                raise InputError(None, "invalid_prompt", problem)
            return _Payload(self.models[prompt_type].get().preprocess(image))
        return _Payload(self.models["box"].get().preprocess(image), self.detector.prepare(image))

    def run_batch(self, batch: Sequence[Prepared], prompt_type: str = "box", prompt: np.ndarray | None = None, **kwargs: Any) -> list[BaseResult]:
        model = self.models[prompt_type].get()
        if prompt is None:
            chained = self._detected_prompts(batch)
        else:
            chained = [(prompt, None)] * len(batch)
        results: list[BaseResult] = []
        for p, item in zip(batch, chained):
            if isinstance(item, BaseResult):  # the detector failed on this image
                item.index = p.index
                results.append(item)
                continue
            prompts, sources = item
            masks = model.segment(p.payload.sample, prompts)
            results.append(self._result(p, prompt_type, prompts, masks, sources))
        return results

    @staticmethod
    def _result(p: Prepared, prompt_type: str, prompts: np.ndarray, masks: np.ndarray, sources) -> SamSegResult:
        label = f"{prompt_type}_prompt"
        plist = [[float(v) for v in row] for row in prompts]
        infos: list[dict[str, Any]] = [{"label": label, "prompt": row} for row in plist]
        if sources is not None:
            for info, src in zip(infos, sources):
                info["source"] = src
        data = {
            "input_path": p.item.uri,
            "page_index": None,
            "prompts": {label: plist},
            "masks": masks,
            "mask_infos": infos,
        }
        return SamSegResult(data, p.image, p.index)
