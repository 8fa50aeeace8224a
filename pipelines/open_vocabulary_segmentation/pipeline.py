"""``open_vocabulary_segmentation``: SAM-H_box / SAM-H_point, as PaddleX runs them, plus chained prompts.

``predict(input, prompt_type="box"|"point", prompt=[[...], ...])`` segments each image
once per prompt. Prompts can also come per input (``prompt="per_input"``: each input's
``options["prompt"]``, e.g. a manifest's ``prompt`` column, which wins over a run-level
prompt whenever present), or, with ``Pxflow.prompts_from`` set and no prompt given, from
another pipeline (any whose results carry ``boxes``: object_detection,
instance_segmentation ...) that runs first: its boxes become the box prompts of the same
image, and each mask keeps the detection it came from (class, label, score).

Prompts given to ``predict`` are checked before any input is read (``ValueError``). A
prompt that leaves a particular image fails that prompt only: it is listed in the
result's ``invalid_prompts`` and the image's other prompts are segmented; only an image
left with no valid prompt becomes an ``invalid_prompt`` error result. Models load on
first use, so a box-only run never loads the point model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..base import BasePipeline, Prepared
from ..config import load_config
from ..io.errors import InputError
from ..io.inputs import InputItem
from ..ops.preprocess import Sample
from ..predictors import LazyPredictor, ModelIdentity, PipelineIdentity, create_predictor
from ..predictors.registry import check_section, section_identity
from ..predictors.sam import SamPredictor
from ..results import BaseResult
from .prompts import PROMPT_TYPES, outside_image, parse_prompts
from .result import SamSegResult

#: prompt type -> (SubModules key, PaddleX module_name)
SUBMODULES = {
    "box": ("BoxPromptSegmentation", "box_prompt_segmentation"),
    "point": ("PointPromptSegmentation", "point_prompt_segmentation"),
}
PER_INPUT = "per_input"


@dataclass
class _Payload:
    sample: Sample
    prompts: np.ndarray | None  # None: ask the detector
    invalid: list[dict[str, Any]]
    detector_payload: Any = None


def _detector_config(spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The chained detector's config: its own YAML/name, merged overrides, our backend and threads."""
    if "pipeline" not in spec:
        raise ValueError("Pxflow.prompts_from needs 'pipeline' (a pipeline name or YAML path)")
    config = load_config(spec["pipeline"], spec.get("config") or {})
    config["Pxflow"].update({k: v for k, v in settings.items() if k in ("backend", "cpu_threads")})
    return config


class OpenVocabularySegmentationPipeline(BasePipeline):
    pipeline_name = "open_vocabulary_segmentation"
    result_class = SamSegResult
    submodules = {key: module for key, module in SUBMODULES.values()}
    primary_submodule = "BoxPromptSegmentation"

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        super().__init__(config, device)
        subs = config.get("SubModules") or {}
        self.models: dict[str, LazyPredictor[SamPredictor]] = {}
        for kind, (key, module) in SUBMODULES.items():
            if subs.get(key):
                check_section(subs[key], self.settings, self.device, module)  # a graph it cannot drive fails now
                self.models[kind] = LazyPredictor(
                    lambda s=subs[key], m=module: create_predictor(s, self.settings, self.device, m)
                )
        if not self.models:
            raise ValueError(f"config has no SubModules.{SUBMODULES['box'][0]} or SubModules.{SUBMODULES['point'][0]} section")
        self.detector, self.detector_options = self._build_detector(self.settings.prompts_from)

    # -- identity: only the models this run will use ------------------------------------------
    @classmethod
    def identity(cls, config: dict[str, Any], options: dict[str, Any] | None = None) -> PipelineIdentity:
        """The SAM model of the run's prompt type, plus the chained detector's models when it prompts."""
        options = options or {}
        prompt_type = options.get("prompt_type") or "box"
        if prompt_type not in SUBMODULES:
            raise ValueError(f"prompt_type must be 'box' or 'point', got {prompt_type!r}")
        key, module = SUBMODULES[prompt_type]
        sub = (config.get("SubModules") or {}).get(key)
        if not sub:
            raise ValueError(f"no SubModules.{key} model is configured for {prompt_type} prompts")
        own = PipelineIdentity((section_identity(sub, key, module),))
        spec = (config.get("Pxflow") or {}).get("prompts_from")
        if not spec or options.get("prompt") is not None:
            return own
        from ..registry import pipeline_class

        det_config = _detector_config(spec, config.get("Pxflow") or {})
        chained = pipeline_class(det_config["pipeline_name"]).identity(det_config, {"threshold": spec.get("threshold")})
        prefixed = tuple(ModelIdentity(f"prompts_from.{m.role}", m.name, m.sha256) for m in chained.models)
        return own + PipelineIdentity(prefixed, chained.data)

    @classmethod
    def model_dir_target(cls, config: dict[str, Any], options: dict[str, Any] | None = None) -> str:
        return SUBMODULES[(options or {}).get("prompt_type") or "box"][0]

    # -- chained mode -------------------------------------------------------------------------
    def _build_detector(self, spec: dict[str, Any] | None):
        if not spec:
            return None, {}
        from ..registry import pipeline_class

        det_config = _detector_config(spec, self.settings.as_dict())
        detector = pipeline_class(det_config["pipeline_name"])(det_config, device=self.device)
        labels = spec.get("labels")
        options = {"threshold": spec.get("threshold"), "labels": None if labels is None else {str(x) for x in labels}}
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

    def warm_up(self, batch: int) -> None:
        """One prompt of each configured kind on a blank image (SAM needs a prompt; it runs one image at a time)."""
        blank = np.full((64, 64, 3), 127, np.uint8)
        for kind in (k for k in PROMPT_TYPES if k in self.models):
            list(self.predict([blank], prompt_type=kind, prompt=[[8, 8, 40, 40]] if kind == "box" else [[20, 20]]))

    def validate_kwargs(self, prompt_type: str = "box", prompt: Any = None, **kwargs: Any) -> dict[str, Any]:
        if prompt_type not in PROMPT_TYPES:
            raise ValueError(f"prompt_type must be 'box' or 'point', got {prompt_type!r}")
        if prompt_type not in self.models:
            raise ValueError(f"no {SUBMODULES[prompt_type][0]} model is configured for {prompt_type} prompts")
        self.models[prompt_type].get()  # load (or fail on a bad model dir) now, not once per image
        if isinstance(prompt, str) and prompt == PER_INPUT:
            return {"prompt_type": prompt_type, "prompt": None, "per_input": True, **kwargs}
        if prompt is None and self.detector is not None:
            if prompt_type != "box":
                raise ValueError("prompts from a detector (Pxflow.prompts_from) are boxes: use prompt_type='box'")
            return {"prompt_type": "box", "prompt": None, **kwargs}
        if prompt is None:
            raise ValueError(
                "open_vocabulary_segmentation needs prompt=[[x1, y1, x2, y2], ...] (box) or [[x, y], ...] (point), "
                f"prompt={PER_INPUT!r} (each input's own prompt), or Pxflow.prompts_from to take boxes from a detector"
            )
        return {"prompt_type": prompt_type, "prompt": parse_prompts(prompt, prompt_type), **kwargs}

    def prepare(
        self, image: np.ndarray, item: InputItem, prompt_type: str = "box", prompt: np.ndarray | None = None,
        per_input: bool = False, **kwargs: Any,
    ) -> _Payload:
        h, w = image.shape[:2]
        own = (item.options or {}).get("prompt")
        if own is not None:
            try:
                prompt = parse_prompts(_literal(own), prompt_type)
            except ValueError as exc:
                raise InputError(item.uri, "invalid_prompt", f"this input's prompt: {exc}") from None
        elif per_input:
            raise InputError(item.uri, "invalid_prompt", "no prompt for this input (prompt='per_input' needs one per input)")
        if prompt is None:
            return _Payload(self.models["box"].get().preprocess(image), None, [], self.detector.prepare(image, item))
        valid, invalid = _split_by_image(prompt, prompt_type, w, h)
        if not len(valid):
            raise InputError(item.uri, "invalid_prompt", invalid[0]["message"] if len(invalid) == 1 else
                             f"all {len(invalid)} prompts lie outside the {w}x{h} image")
        return _Payload(self.models[prompt_type].get().preprocess(image), valid, invalid)

    def run_batch(self, batch: Sequence[Prepared], prompt_type: str = "box", **kwargs: Any) -> list[BaseResult]:
        model = self.models[prompt_type].get()
        chained = iter(self._detected_prompts([p for p in batch if p.payload.prompts is None]) if self.detector else [])
        results: list[BaseResult | None] = []
        todo: list[tuple[int, Prepared, np.ndarray, Any]] = []
        for p in batch:
            if p.payload.prompts is not None:
                prompts, sources = p.payload.prompts, None
            else:
                item = next(chained)
                if isinstance(item, BaseResult):  # the detector failed on this image
                    item.index = p.index
                    results.append(item)
                    continue
                prompts, sources = item
            todo.append((len(results), p, prompts, sources))
            results.append(None)
        masks = model.infer([(p.payload.sample, prompts) for _, p, prompts, _ in todo])
        for (at, p, prompts, sources), image_masks in zip(todo, masks):
            results[at] = self._result(p, prompt_type, prompts, image_masks, sources)
        return results  # type: ignore[return-value]  (every None was filled above)

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
        if p.payload.invalid:
            data["invalid_prompts"] = p.payload.invalid
        return SamSegResult(data, p.image, p.index)


def _split_by_image(prompts: np.ndarray, prompt_type: str, width: int, height: int):
    """``(prompts inside the image, [{prompt, message}] for each one outside it)``."""
    inside, invalid = [], []
    for row in prompts:
        problem = outside_image(row[None], prompt_type, width, height)
        if problem:
            invalid.append({"prompt": [float(v) for v in row], "message": problem.replace("prompt #0 ", "prompt ")})
        else:
            inside.append(row)
    return np.array(inside, dtype=np.float64).reshape(-1, prompts.shape[1]), invalid


def _literal(value: Any) -> Any:
    """A prompt from a manifest cell: a JSON string (``[[1,2,3,4]]``) or already a list."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"not a JSON list: {value!r}") from None
    return value
