"""The base result: a plain dict plus the source image, serialised the way PaddleX does.

``res.json == {"res": {...}}``; ``save_to_json(dir)`` writes ``{stem}_res.json``;
``save_to_img(dir)`` writes ``{stem}_res.{ext}`` (``.jpg`` when the input had no
image suffix); ``res.img == {"res": <BGR ndarray>}``. A path ending in
``.json``/an image suffix is used as the exact file name.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

import cv2
import numpy as np

from ..io.images import IMAGE_SUFFIXES
from ..io.uri import uri_name


def to_jsonable(value: Any) -> Any:
    """Numpy scalars/arrays and tuples into plain JSON types, recursively."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


class BaseResult:
    """One input's prediction: ``data`` (what JSON shows) and the image it was made from."""

    def __init__(self, data: dict[str, Any], image: np.ndarray | None = None, index: int = 0) -> None:
        self.data = data
        self.image = image
        self.index = index

    ok = True

    # dict-like access, as PaddleX results are dicts
    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def keys(self):
        return self.data.keys()

    @property
    def input_path(self) -> str | None:
        return self.data.get("input_path")

    @property
    def json(self) -> dict[str, Any]:
        return {"res": to_jsonable(self._json_body())}

    def _json_body(self) -> dict[str, Any]:
        return self.data

    @property
    def img(self) -> dict[str, np.ndarray]:
        return {"res": self.render()}

    def render(self) -> np.ndarray:
        """The visualisation (BGR). Subclasses draw on a copy of the source image."""
        if self.image is None:
            raise ValueError("this result has no image to draw on")
        return self.image.copy()

    def stem(self) -> str:
        path = self.input_path
        if not path:
            return f"res_{self.index}"
        name = uri_name(path)
        return os.path.splitext(name)[0] or f"res_{self.index}"

    def _image_ext(self) -> str:
        ext = os.path.splitext(uri_name(self.input_path or ""))[1].lower()
        return ext if ext in IMAGE_SUFFIXES else ".jpg"

    def print(self, file: TextIO | None = None, indent: int = 4) -> None:
        print(json.dumps(self.json, indent=indent, ensure_ascii=False), file=file or sys.stdout)

    def __str__(self) -> str:
        return json.dumps(self.json, ensure_ascii=False)

    def save_to_json(self, save_path: str, indent: int = 4, ensure_ascii: bool = False) -> str:
        """Write the JSON to ``save_path`` (a directory, or a ``.json`` file name); returns the file."""
        path = save_path if save_path.endswith(".json") else os.path.join(save_path, f"{self.stem()}_res.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.json, f, indent=indent, ensure_ascii=ensure_ascii)
        os.replace(tmp, path)
        return path

    def save_to_img(self, save_path: str) -> str:
        """Write the visualisation to ``save_path`` (a directory, or an image file name); returns the file."""
        if os.path.splitext(save_path)[1].lower() in IMAGE_SUFFIXES:
            path = save_path
        else:
            path = os.path.join(save_path, f"{self.stem()}_res{self._image_ext()}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        ok, buf = cv2.imencode(os.path.splitext(path)[1], self.render())
        if not ok:
            raise ValueError(f"cannot encode an image as {path}")
        with open(path, "wb") as f:
            f.write(buf.tobytes())
        return path


class ErrorResult(BaseResult):
    """An input that failed (see :mod:`pipelines.io.errors`); the run goes on without it."""

    ok = False

    def __init__(self, input_path: str | None, error_type: str, message: str, index: int = 0) -> None:
        super().__init__(
            {"input_path": input_path, "page_index": None, "error": {"type": error_type, "message": message}},
            None,
            index,
        )

    @property
    def error_type(self) -> str:
        return self.data["error"]["type"]

    @property
    def error_message(self) -> str:
        return self.data["error"]["message"]

    def save_to_img(self, save_path: str) -> str:
        raise ValueError(f"{self.input_path}: no image for a failed input ({self.error_type})")
