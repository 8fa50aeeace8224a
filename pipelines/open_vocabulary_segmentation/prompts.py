"""Prompt parsing and checks, done before any image is read or any model runs.

Boxes are ``[x1, y1, x2, y2]``, points ``[x, y]``, in original-image pixels.
One prompt may be given flat (``[x1, y1, x2, y2]``); PaddleX's point feed layout
``[[[x, y]]]`` is accepted too. What can be checked without the image (arity,
numbers, NaN, empty, negative, inverted boxes) raises ``ValueError`` at once;
:func:`outside_image` is the per-image check.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PROMPT_TYPES = ("box", "point")
ARITY = {"box": 4, "point": 2}


def parse_prompts(prompt: Any, prompt_type: str) -> np.ndarray:
    """``[N, 4]`` boxes or ``[N, 2]`` points as float64; raises ``ValueError`` naming what is wrong."""
    if prompt_type not in PROMPT_TYPES:
        raise ValueError(f"prompt_type must be 'box' or 'point', got {prompt_type!r}")
    arity = ARITY[prompt_type]
    shape_hint = "[[x1, y1, x2, y2], ...]" if prompt_type == "box" else "[[x, y], ...]"
    if prompt is None:
        raise ValueError(f"a {prompt_type} prompt is required: prompt={shape_hint}")
    try:
        arr = np.asarray(prompt, dtype=np.float64)
    except (ValueError, TypeError):
        raise ValueError(f"{prompt_type} prompts must be lists of {arity} numbers, e.g. {shape_hint}; got {prompt!r}") from None
    if arr.size == 0:
        raise ValueError(f"empty {prompt_type} prompt: give at least one, e.g. {shape_hint}")
    if arr.ndim == 1 and arr.shape[0] == arity:
        arr = arr[None]
    elif prompt_type == "point" and arr.ndim == 3 and arr.shape[1:] == (1, 2):
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != arity:
        raise ValueError(f"each {prompt_type} prompt needs {arity} numbers {shape_hint}; got shape {list(np.shape(prompt))}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(f"{prompt_type} prompt #{int(np.argmax(bad))} {arr[bad][0].tolist()} is not finite (NaN or inf)")
    negative = (arr < 0).any(axis=1)
    if negative.any():
        i = int(np.argmax(negative))
        raise ValueError(f"{prompt_type} prompt #{i} {arr[i].tolist()} lies outside the image (negative coordinate)")
    if prompt_type == "box":
        flat = (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])
        if flat.any():
            i = int(np.argmax(flat))
            raise ValueError(f"box prompt #{i} {arr[i].tolist()} is empty: need x1 < x2 and y1 < y2")
    return arr


def outside_image(prompts: np.ndarray, prompt_type: str, width: int, height: int) -> str | None:
    """A message for the first prompt that leaves the ``width x height`` image, or None."""
    xs = prompts[:, 0::2]
    ys = prompts[:, 1::2]
    out = (xs > width).any(axis=1) | (ys > height).any(axis=1)
    if not out.any():
        return None
    i = int(np.argmax(out))
    return f"{prompt_type} prompt #{i} {prompts[i].tolist()} lies outside the {width}x{height} image"
