"""The base result: a ``dict`` (as PaddleX's results are) plus the source image, serialised the way PaddleX does.

``isinstance(res, dict)``, ``"boxes" in res``, ``dict(res)``, ``len(res)`` and ``json.dumps(res)`` (for
results whose values are plain JSON: detection, PP-ShiTu) work as with PaddleX;

``res.json == {"res": {...}}``; ``save_to_json(dir)`` writes ``{stem}_res.json``;
``save_to_img(dir)`` writes ``{stem}_res.{ext}`` (``.jpg`` when the input had no
image suffix); ``res.img == {"res": <RGB PIL.Image.Image>}`` as in PaddleX (pxflow code
that wants the BGR ndarray calls ``render()``); ``res.print(format_json=True, indent=4,
ensure_ascii=False)``. A path ending in ``.json``/an image suffix is used as the exact file name.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

import cv2
import numpy as np

from ..io.images import IMAGE_SUFFIXES
from ..io.uri import uri_name

if TYPE_CHECKING:
    import pyarrow as pa

    from .records import ObjectRecord


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


class BaseResult(dict):
    """One input's prediction: the dict itself (what JSON shows) and the image it was made from.

    A ``dict`` subclass because PaddleX documents each result as one; ``image`` and ``index`` are
    attributes, not keys, so ``dict(res)`` is exactly the prediction.
    """

    def __init__(self, data: dict[str, Any], image: np.ndarray | None = None, index: int = 0) -> None:
        super().__init__(data)
        self.image = image
        self.index = index

    ok = True

    @property
    def data(self) -> "BaseResult":
        """The prediction as a dict: the result itself (kept for code written before results were dicts)."""
        return self

    # identity, not item-wise equality: items may be numpy arrays (masks), whose comparison has no
    # truth value; compare ``dict(res)`` or ``res.json`` for contents
    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    @property
    def input_path(self) -> str | None:
        return self.data.get("input_path")

    def object_records(self) -> "list[ObjectRecord]":
        """This result's ``objects`` table rows (one per object), without the shared columns.

        Every result class a pipeline yields implements it: the result owns its
        serialisation, the batch layer never guesses a result's shape.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define object_records()")

    @classmethod
    def record_schema(cls) -> "pa.Schema":
        """The columns :meth:`object_records` may fill, typed: this class's fragment of the ``objects`` table.

        The base fragment is the shared record columns (:func:`~.records.base_record_schema`).
        A result class whose records carry more extends it, so the table gains the columns
        (existing tables evolve, old rows read null) and readers of the shared ones never break::

            @classmethod
            def record_schema(cls):
                return super().record_schema().append(pa.field("top2_label", pa.string()))

        A record key outside it fails the shard rather than being dropped (``pxflow.tasks.rows``).
        """
        from .records import base_record_schema

        return base_record_schema()

    @property
    def json(self) -> dict[str, Any]:
        return {"res": to_jsonable(self._json_body())}

    def _json_body(self) -> dict[str, Any]:
        return dict(self)

    @property
    def str(self) -> dict[str, str]:
        """``{"res": <the JSON text>}``, as PaddleX 3.x's ``res.str``."""
        return {"res": json.dumps(self.json["res"], ensure_ascii=False)}

    @property
    def img(self) -> "dict[str, Any]":
        """``{"res": PIL.Image.Image}`` (RGB), as PaddleX's ``res.img``; :meth:`render` gives the BGR ndarray."""
        from PIL import Image

        drawn = self.render()
        if drawn.ndim == 3 and drawn.shape[2] == 4:
            rgb = cv2.cvtColor(drawn, cv2.COLOR_BGRA2RGBA)
        elif drawn.ndim == 3:
            rgb = cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB)
        else:
            rgb = drawn
        return {"res": Image.fromarray(np.ascontiguousarray(rgb))}

    def render(self) -> np.ndarray:
        """The visualisation (BGR). Subclasses draw on a copy of the source image."""
        if self.image is None:
            raise ValueError("this result has no image to draw on")
        return self.image.copy()

    def stem(self) -> str:
        """The saved files' stem: the input's name, with ``_<page_index>`` for a PDF page as PaddleX
        names them (``doc_0_res.json``, ``doc_1_res.json``: pages never overwrite each other)."""
        path = self.input_path
        if not path:
            return f"res_{self.index}"
        stem = os.path.splitext(uri_name(path))[0] or f"res_{self.index}"
        page = self.get("page_index")
        return stem if page is None else f"{stem}_{page}"

    def _image_ext(self) -> str:
        ext = os.path.splitext(uri_name(self.input_path or ""))[1].lower()
        return ext if ext in IMAGE_SUFFIXES else ".jpg"

    def print(
        self,
        format_json: bool = True,
        indent: int = 4,
        ensure_ascii: bool = False,
        *,
        json_format: bool | None = None,
        file: TextIO | None = None,
    ) -> None:
        """Print ``{"res": ...}`` with PaddleX's signature.

        ``format_json=True`` (the documented default): JSON text indented by ``indent``, non-ASCII
        kept unless ``ensure_ascii``. ``format_json=False``: the plain dict repr, as PaddleX prints
        ``{"res": self}``. ``json_format`` is the spelling PaddleX's code (and its general
        usage docs) use for the same switch; it wins when given. Writes to ``file`` (stdout).
        """
        as_json = format_json if json_format is None else json_format
        text = json.dumps(self.json, indent=indent, ensure_ascii=ensure_ascii) if as_json else repr(self.json)
        print(text, file=file or sys.stdout)

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

    def object_records(self) -> "list[ObjectRecord]":
        return []  # a failed input has its images row (status error) and no objects

    @property
    def error_type(self) -> str:
        return self.data["error"]["type"]

    @property
    def error_message(self) -> str:
        return self.data["error"]["message"]

    def save_to_img(self, save_path: str) -> str:
        raise ValueError(f"{self.input_path}: no image for a failed input ({self.error_type})")
