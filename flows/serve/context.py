"""The server's side of :class:`pxflow.pipelines.serving.ServingContext`: what a handler can ask of the server.

:class:`Shared` holds what lives as long as the app (the pipeline, the options, the
micro-batcher, the HTTP client for image URLs, the slots for off-loop model work);
:class:`RequestContext` adds one request's ``logId`` and the stack that holds its pixel units
until its response is rendered. Every image a handler touches goes through the limits
(:mod:`.limits`) and the admission into the pixel budget (:mod:`.admission`) here, so a
pipeline's handler cannot skip them.
"""

from __future__ import annotations

import asyncio
import base64
import json
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import cv2
import numpy as np

from .admission import admit_request, check_request, request_units
from .batching import MicroBatcher
from .limits import ApiError, Limits, decode_checked, image_bytes, image_pixels
from .options import ServeOptions

T = TypeVar("T")


@dataclass
class Shared:
    """What every request of one app shares."""

    pipeline: Any
    options: ServeOptions
    batcher: MicroBatcher
    #: bounds model or index work that handlers run outside the batcher (``offload``) to ``workers`` at once
    slots: asyncio.Semaphore
    #: the ``httpx.AsyncClient`` fetching image URLs (opened by the app's lifespan)
    client: Any = None

    @property
    def limits(self) -> Limits:
        return self.options.limits


def jpeg_base64(result: Any, quality: int) -> str:
    ok, buf = cv2.imencode(".jpg", result.render(), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding of the visualisation failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


class RequestContext:
    """One request's :class:`~pxflow.pipelines.serving.ServingContext`."""

    def __init__(self, shared: Shared, log_id: str, held: AsyncExitStack) -> None:
        self._shared = shared
        self._held = held
        self.log_id = log_id
        self.pipeline = shared.pipeline
        self.options = shared.options
        self.limits = shared.limits

    def _visualizing(self, visualize: Optional[bool]) -> bool:
        return self.options.visualize if visualize is None else bool(visualize)

    async def _admit(self, pixels: list[int], *, visualize: bool, prompts: int) -> None:
        """Check the request's caps and hold its pixel units (until the response is rendered) before decoding."""
        units = request_units(pixels, visualize=visualize, prompts=prompts)
        check_request(pixels, units, self.limits)
        self._held.callback((await admit_request(units, self.limits)).close)

    async def read_image(self, value: Any, what: str = "image") -> bytes:
        return await image_bytes(value, self.limits, self._shared.client, what=what)

    async def decode_images(self, data: Sequence[bytes], what: Sequence[str], *, visualize: bool = False,
                            prompts: int = 0) -> list[np.ndarray]:
        pixels = [image_pixels(d, self.limits, w) for d, w in zip(data, what)]
        await self._admit(pixels, visualize=visualize, prompts=prompts)  # the sum over the images
        return [await asyncio.to_thread(decode_checked, d, self.limits, w) for d, w in zip(data, what)]

    async def infer(self, image: Any, kwargs: Mapping[str, Any], *, visualize: Optional[bool] = None,
                    prompts: int = 0) -> Any:
        batcher = self._shared.batcher
        with batcher.announce() as announcement:  # concurrent requests on their way share a model call
            data = await self.read_image(image)
            [array] = await self.decode_images([data], ["image"], visualize=self._visualizing(visualize), prompts=prompts)
            del data
            announcement.done()
            key = json.dumps(dict(kwargs), sort_keys=True, default=str)
            try:
                return await asyncio.wait_for(batcher.submit(key, (array, dict(kwargs))), self.limits.request_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(504, f"inference did not finish within {self.limits.request_timeout_s:g} s") from None

    async def picture(self, result: Any, visualize: Optional[bool]) -> Optional[str]:
        if not self._visualizing(visualize):
            return None
        return await asyncio.to_thread(jpeg_base64, result, self.options.jpeg_quality)

    async def offload(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._shared.slots:
            return await asyncio.to_thread(fn, *args, **kwargs)
