"""PP-ShiTuV2 general image recognition: mainbody detection + features + faiss retrieval."""

from .feature_model import FeatureModel, l2_normalize_rows
from .pipeline import ShiTuV2Pipeline
from .result import ShiTuResult

__all__ = ["FeatureModel", "ShiTuResult", "ShiTuV2Pipeline", "l2_normalize_rows"]
