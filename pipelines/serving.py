"""What a pipeline's serving handler sees: :class:`ServingContext`, :class:`ServingError`, :func:`parse`.

``pxflow serve`` answers each :class:`~pxflow.pipelines.spec.Endpoint` of the served
pipeline's spec by awaiting its handler, ``async def handle(ctx, body) -> dict``: ``body`` is
the request's decoded JSON and the returned dict becomes the ``result`` of PaddleX's envelope.
What every pipeline shares stays in the server (the envelope, body limits, fetching and
decoding images within the limits, admission into the pixel budget, micro-batching, metrics)
and reaches the handler through the context, so a pipeline, built in or from a plug-in, gets
its endpoints without an edit to the server. The handler knows only its own request and
response fields, like PaddleX's per-pipeline ``serving/basic_serving/_pipeline_apps`` modules.

This module imports neither FastAPI nor Prefect: pipelines stay usable on their own
(``tests/test_layering.py``), and the server maps :class:`ServingError` to its envelope.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T")


class ServingError(Exception):
    """A request the server refuses: ``status`` (the HTTP status, 4xx/5xx) and the message for ``errorMsg``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message


class ServingLimits(Protocol):
    """The per-request caps a handler checks itself, before any image is read (the server checks the rest)."""

    #: images per ``imageLabelPairs`` request
    max_pairs: int
    #: largest ``topk`` a search may ask for
    max_topk: int
    #: most prompts in one request (each one is a full-image mask)
    max_prompts: int


class ServingOptions(Protocol):
    """Server options a handler may need (``pxflow serve`` flags)."""

    #: where index endpoints create and find versioned indexes (folder or ``s3://`` prefix); None: not set
    index_root: Optional[str]
    #: what an index build creates
    index_type: str
    metric_type: str


class ServingContext(Protocol):
    """What the server hands a handler for one request; the request's pixels are held until its response is sent."""

    #: the served pipeline object (already built)
    pipeline: Any
    limits: ServingLimits
    options: ServingOptions
    #: the request's ``logId``
    log_id: str

    async def infer(self, image: Any, kwargs: Mapping[str, Any], *, visualize: Optional[bool] = None,
                    prompts: int = 0) -> Any:
        """The result of ``pipeline.predict(image, **kwargs)`` for one request ``image`` field.

        The image is read (URL or base64) and sized from its header, the request is admitted
        into the pixel budget (``prompts`` and ``visualize`` count there), then it is decoded
        and micro-batched with other requests that have the same ``kwargs``. A failed result
        or a ``ValueError``/``TypeError`` from ``predict()`` is raised as :class:`ServingError`.
        """
        ...

    async def read_image(self, value: Any, what: str = "image") -> bytes:
        """The file bytes of an image field (an http(s) URL fetched safely, or base64); nothing decoded."""
        ...

    async def decode_images(self, data: Sequence[bytes], what: Sequence[str], *, visualize: bool = False,
                            prompts: int = 0) -> list[np.ndarray]:
        """Admit the images' pixels (summed, read from their headers) for this request, then decode them (BGR)."""
        ...

    async def picture(self, result: Any, visualize: Optional[bool]) -> Optional[str]:
        """``result.render()`` as base64 JPEG for the response's ``image``; None when not visualising."""
        ...

    async def offload(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking model or index work outside the batcher off the event loop, a bounded number at once."""
        ...


class Request(BaseModel):
    """Base of the request models: unknown fields are ignored, as PaddleX's pydantic models do."""

    model_config = ConfigDict(extra="ignore")


class ImageRequest(Request):
    """A request about one image; ``visualize`` is pxflow's extension (False: ``result.image`` is null)."""

    image: str
    visualize: Optional[bool] = None


def parse(model: type[BaseModel], payload: Any) -> Any:
    """Validate a decoded JSON body into ``model``; a 422 :class:`ServingError` naming the bad fields."""
    if not isinstance(payload, dict):
        raise ServingError(422, "the request body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            problems.append(f"{where}: {err.get('msg')}")
        raise ServingError(422, "invalid request: " + "; ".join(problems)) from None


def floats(values: Any) -> list[float]:
    """Numbers (numpy or Python) as JSON floats."""
    return [float(v) for v in values]
