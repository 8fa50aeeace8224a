"""PaddleX 3.x's response envelope, the same for every endpoint of every pipeline.

Success is ``{logId, errorCode: 0, errorMsg: "Success", result}``; a failure is
``{logId, errorCode: <HTTP status>, errorMsg}`` (PaddleX's ``NoResultResponse``: no ``result``),
sent with that HTTP status. Each pipeline's request and ``result`` fields live in its own
package (``pipelines/<package>/serving.py``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi.responses import JSONResponse

try:  # orjson comes with Prefect; plain json otherwise
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None


def loads(data: bytes) -> Any:
    return _orjson.loads(data) if _orjson is not None else json.loads(data)


class Json(JSONResponse):
    """A JSON response rendered with orjson when present (numpy-free dicts, non-string keys allowed)."""

    def render(self, content: Any) -> bytes:
        if _orjson is not None:
            return _orjson.dumps(content, option=_orjson.OPT_NON_STR_KEYS)
        return super().render(content)


def new_log_id() -> str:
    return str(uuid.uuid4())


def ok(result: dict[str, Any], log_id: str) -> dict[str, Any]:
    return {"logId": log_id, "errorCode": 0, "errorMsg": "Success", "result": result}


def error(status: int, message: str, log_id: str) -> dict[str, Any]:
    return {"logId": log_id, "errorCode": int(status), "errorMsg": message}


def error_response(status: int, message: str, log_id: str) -> JSONResponse:
    return Json(error(status, message, log_id), status_code=status)
