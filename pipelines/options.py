"""Typed ``predict()`` options: the pydantic model a pipeline's spec names (:attr:`PipelineSpec.options`).

One model per pipeline says which keywords its ``predict()`` takes besides the inputs, their
types and what they mean. It is the single source of three things that used to drift apart:
the check of a call's keywords (:func:`check_options`: a misspelt ``thresold=`` is a
``TypeError`` naming it, a wrong type a one-line ``ValueError``), the CLIs' pipeline flags
(generated from the fields; each field's ``description`` is the flag's help) and the docs.

A model validates types only; what needs the loaded pipeline (a threshold's range per class,
whether an index fits the recognition model, prompts against the image) stays in the
pipeline's ``validate_kwargs``.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class PredictOptions(BaseModel):
    """Base of every options model: unknown keywords are refused, any Python value may be given
    (an ``IndexData``, a numpy array of prompts)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class ThresholdOptions(PredictOptions):
    """The detectors' one option (object_detection, small_object_detection, instance_segmentation)."""

    threshold: float | dict[int, float] | None = Field(
        None, description="score threshold: a float, or {cls_id: float} per class (default: the config's)"
    )


def option_names(model: type[BaseModel] | None) -> list[str]:
    """The keywords ``model`` accepts, in declaration order (none without a model)."""
    return list(model.model_fields) if model is not None else []


def check_options(model: type[BaseModel] | None, owner: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` checked against ``model``: the given keys with their validated values.

    An unknown keyword is a ``TypeError`` naming it and the accepted ones (as Python does for
    a function); a value of the wrong type is a one-line ``ValueError`` naming the option.
    Only the keys given are returned, so the pipeline's own defaults still apply to the rest.
    """
    known = option_names(model)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise TypeError(
            f"{owner}.predict() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}"
            f" (it takes: {', '.join(sorted([*known, 'on_error', 'storage', 'device']))})"
        )
    if model is None or not kwargs:
        return dict(kwargs)
    try:
        parsed = model.model_validate(dict(kwargs))
    except ValidationError as exc:
        raise ValueError(f"{owner}.predict(): {validation_summary(exc)}") from None
    return {name: getattr(parsed, name) for name in kwargs}


def validation_summary(exc: ValidationError) -> str:
    """pydantic's multi-line report as one line: ``option: message (got value)`` per error."""
    parts: list[str] = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        name = str(loc[0]) if loc else "options"
        given = error.get("input")
        shown = f" (got {given!r})" if isinstance(given, (int, float, str)) and not isinstance(given, bool) else ""
        part = f"{name}: {error.get('msg', '')}{shown}"
        if part not in parts:
            parts.append(part)
    return "; ".join(" ".join(p.split()) for p in parts)
