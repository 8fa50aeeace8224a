"""PP-ShiTuV2 general image recognition: mainbody detection + features + faiss retrieval.

``ShiTuV2Pipeline`` and ``ShiTuResult`` load on first access: reading the package's spec
(``pp_shitu_v2.spec``, e.g. for ``pxflow --help``) must not import faiss and the models.
"""

from typing import Any

__all__ = ["ShiTuResult", "ShiTuV2Pipeline"]


def __getattr__(name: str) -> Any:
    if name == "ShiTuV2Pipeline":
        from .pipeline import ShiTuV2Pipeline

        return ShiTuV2Pipeline
    if name == "ShiTuResult":
        from .result import ShiTuResult

        return ShiTuResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
