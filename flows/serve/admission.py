"""What one request may hold in memory, its admission into the process's pixel budget, and the bound that follows.

A request is sized before anything is decoded: its images' headers give their pixels
(:func:`.limits.image_pixels`), and :func:`request_units` turns those (and the SAM prompt
count) into *pixel units* of the one process-wide :class:`pxflow.pipelines.prefetch.PixelBudget`
that every ``predict()`` call already shares: one unit is one decoded BGR pixel, 3 bytes. A
request holds its units from before decoding until its response is built; one that cannot get
them within ``admission_timeout_s`` is answered 503 and has decoded nothing. The arrays then go
to ``predict(..., admitted=True)``, which does not count them again.

Units per image pixel (why): 1 for the decoded image; 1 for the model side's full-resolution
copies (colour conversion before resizing; SAM's float32 upsampling of each mask, done one
mask at a time); 1 more when the response carries a visualisation (``render()`` draws on a
copy); for SAM, one byte per pixel per prompt (its boolean masks, all alive together: P/3
units, rounded up) and, when visualised, the float32 blend of ``overlay_masks`` (8). Each SAM
prompt also holds its low-resolution logits (256 x 256 float32), whatever the image.

With ``B`` = ``max_pixels_in_flight`` the server's resident memory stays under
``baseline + 3 B + concurrency x max_body_bytes x BODY_COPIES``, where ``baseline`` is the
peak RSS after loading and warming up the model (weights, runtime arenas, libraries) and the
last term covers request bodies being read and parsed (raw chunks, the joined body, the JSON
text, the decoded image bytes). ``/metrics`` states it.
"""

from __future__ import annotations

import asyncio
import math
import resource
from typing import Iterable

from pxflow.pipelines.prefetch import BudgetSession, BudgetTimeout, admit, pixel_budget

from .limits import ApiError, Limits

#: bytes of one pixel unit (a decoded BGR pixel)
BYTES_PER_UNIT = 3
#: a request body alive at most this many times over while it is read, joined, parsed and its image decoded
BODY_COPIES = 4
#: SAM's low-resolution logits per prompt (256 x 256 float32), in units
LOGIT_UNITS_PER_PROMPT = -(-256 * 256 * 4 // BYTES_PER_UNIT)
#: how often a request waiting for room polls the budget (the wait is on the event loop, no thread held)
POLL_S = 0.02


def request_units(pixels: Iterable[int], *, visualize: bool = False, prompts: int = 0) -> int:
    """Pixel units a request holds while in flight (see the module docstring for each term)."""
    total = sum(int(p) for p in pixels)
    per_pixel = 2 + (1 if visualize else 0)
    if prompts:
        per_pixel += math.ceil(prompts / BYTES_PER_UNIT) + (8 if visualize else 0)
    return total * per_pixel + prompts * LOGIT_UNITS_PER_PROMPT


def check_request(pixels: list[int], units: int, limits: Limits) -> None:
    """413 naming the cap a request is over: its decoded pixels, or units beyond the whole in-flight budget."""
    total = sum(pixels)
    if total > limits.max_request_pixels:
        raise ApiError(413, f"the request's images have {total} pixels, over the limit of {limits.max_request_pixels} "
                            "per request (raise it with --max-request-pixels, at most --max-pixels-in-flight)")
    if units > limits.max_pixels_in_flight:
        raise ApiError(413, f"the request needs {units} pixel units in flight ({total} pixels, plus masks, prompts and "
                            f"visualisation), over the server's budget of {limits.max_pixels_in_flight} "
                            "(--max-pixels-in-flight); send fewer prompts, a smaller image or visualize: false")


async def admit_request(units: int, limits: Limits) -> BudgetSession:
    """Hold ``units`` of the process budget, waiting up to ``admission_timeout_s`` (then 503, nothing held)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.admission_timeout_s
    while True:
        try:
            return admit(units, limits.max_pixels_in_flight, timeout=0)
        except BudgetTimeout:
            if loop.time() >= deadline:
                budget = pixel_budget()
                raise ApiError(503, f"server busy: no room for the request's {units} pixel units within "
                                    f"{limits.admission_timeout_s:g} s ({budget.in_flight} of {limits.max_pixels_in_flight} "
                                    "in flight; --max-pixels-in-flight, --admission-timeout)") from None
        await asyncio.sleep(POLL_S)


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux reports kilobytes)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def memory_bound(baseline_bytes: int, limits: Limits) -> int:
    """The resident memory the server keeps under; see the module docstring."""
    return (int(baseline_bytes) + BYTES_PER_UNIT * limits.max_pixels_in_flight
            + limits.max_concurrency * limits.max_body_bytes * BODY_COPIES)
