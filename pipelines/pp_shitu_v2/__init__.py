"""PP-ShiTuV2 general image recognition: mainbody detection + features + faiss retrieval."""

from .pipeline import ShiTuV2Pipeline
from .result import ShiTuResult

__all__ = ["ShiTuResult", "ShiTuV2Pipeline"]
