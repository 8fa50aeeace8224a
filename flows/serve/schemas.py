"""Request models and response builders of PaddleX 3.x's serving API, field for field.

Requests and results follow ``paddlex/inference/serving/schemas/*.py`` (PaddleX 3.x):
camelCase fields, ``bbox`` as ``[x1, y1, x2, y2]``, masks as ``{rleResult, size: [h, w]}``
(COCO compressed RLE counts of the full image), ``image`` as JPEG base64 of the visualisation.
The envelope is ``{logId, errorCode: 0, errorMsg: "Success", result}``; a failure is
``{logId, errorCode: <HTTP status>, errorMsg}``.
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .limits import ApiError


class _Request(BaseModel):
    # unknown fields are ignored, as PaddleX's pydantic models do
    model_config = ConfigDict(extra="ignore")


class DetectionRequest(_Request):
    image: str
    threshold: Optional[Union[float, Dict[int, float]]] = None
    #: pxflow extension: False leaves ``result.image`` null (default: the server's --visualize)
    visualize: Optional[bool] = None


class InstanceSegmentationRequest(_Request):
    image: str
    threshold: Optional[float] = None
    visualize: Optional[bool] = None


class OpenVocabularySegmentationRequest(_Request):
    image: str
    prompt: List[List[float]]
    #: ``promptType`` ("box" | "point"); PaddleX's schema module spells it ``prompt_type``: both are accepted
    promptType: Optional[str] = None
    prompt_type: Optional[str] = None
    visualize: Optional[bool] = None

    @property
    def kind(self) -> str:
        kind = self.promptType or self.prompt_type
        if kind not in ("box", "point"):
            raise ApiError(422, f"promptType must be 'box' or 'point', got {kind!r}")
        return kind


class ImageLabelPair(_Request):
    image: str
    label: str


class BuildIndexRequest(_Request):
    imageLabelPairs: List[ImageLabelPair]

    @field_validator("imageLabelPairs")
    @classmethod
    def _non_empty(cls, value):
        if not value:
            raise ValueError("needs at least one {image, label} pair")
        return value


class AddImagesToIndexRequest(BuildIndexRequest):
    indexKey: str


class RemoveImagesFromIndexRequest(_Request):
    ids: List[int]
    indexKey: str


class ShiTuInferRequest(_Request):
    image: str
    indexKey: Optional[str] = None
    detThreshold: Optional[float] = None
    recThreshold: Optional[float] = None
    hammingRadius: Optional[float] = None
    topk: Optional[int] = None
    visualize: Optional[bool] = None


def parse(model: type[BaseModel], payload: Any) -> Any:
    """Validate a decoded JSON body; :class:`ApiError` 422 naming the bad fields."""
    if not isinstance(payload, dict):
        raise ApiError(422, "the request body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            problems.append(f"{where}: {err.get('msg')}")
        raise ApiError(422, "invalid request: " + "; ".join(problems)) from None


def new_log_id() -> str:
    return str(uuid.uuid4())


def ok(result: dict[str, Any], log_id: str) -> dict[str, Any]:
    return {"logId": log_id, "errorCode": 0, "errorMsg": "Success", "result": result}


def error(status: int, message: str, log_id: str) -> dict[str, Any]:
    return {"logId": log_id, "errorCode": int(status), "errorMsg": message}


# -- results -> PaddleX result fields ----------------------------------------------------------
def _floats(values) -> list[float]:
    return [float(v) for v in values]


def detected_objects(result) -> list[dict[str, Any]]:
    return [
        {"bbox": _floats(b["coordinate"]), "categoryId": int(b["cls_id"]), "categoryName": str(b.get("label") or ""),
         "score": float(b["score"])}
        for b in result.data.get("boxes", [])
    ]


def instances(result) -> list[dict[str, Any]]:
    rles = result.rles
    out = []
    for i, b in enumerate(result.data.get("boxes", [])):
        rle = rles[i] if i < len(rles) else None
        out.append({
            "bbox": _floats(b["coordinate"]), "categoryId": int(b["cls_id"]), "categoryName": str(b.get("label") or ""),
            "score": float(b["score"]),
            "mask": None if rle is None else {"rleResult": rle["counts"], "size": [int(rle["size"][0]), int(rle["size"][1])]},
        })
    return out


def sam_masks(result) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """PaddleX's ``{rleResult, size}`` per mask, plus ``counts`` (the same string): the document decodes each mask
    with ``pycocotools.mask.decode(mask)``, which reads ``size`` and ``counts``."""
    masks = [{"rleResult": r["counts"], "counts": r["counts"], "size": [int(r["size"][0]), int(r["size"][1])]} for r in result.rles]
    infos = [{"label": str(i["label"]), "prompt": _floats(i["prompt"])} for i in result.data.get("mask_infos", [])]
    return masks, infos


def shitu_objects(result) -> list[dict[str, Any]]:
    out = []
    for b in result.data.get("boxes", []):
        labels, scores = b.get("labels") or [], b.get("rec_scores") or []
        rec = [{"label": str(lab), "score": float(s)} for lab, s in zip(labels, scores) if lab is not None and s is not None]
        out.append({"bbox": _floats(b["coordinate"]), "recResults": rec, "score": float(b.get("det_score") or 0.0)})
    return out
