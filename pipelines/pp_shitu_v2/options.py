"""``PP-ShiTuV2``'s ``predict()`` options: the index to search and the per-call thresholds (PaddleX's names)."""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import Field

from ..options import PredictOptions


class ShiTuOptions(PredictOptions):
    """Each option overrides the config key of the same name for one call."""

    # str first: a CLI value stays a path; an IndexData (any object) is accepted as it is
    index: Optional[Union[str, Any]] = Field(
        None, description="the index to search: a folder, ROOT/NAME or ROOT/NAME@vNNNNNN (default: the config's index)"
    )
    det_threshold: float | None = Field(None, description="mainbody detection score threshold (default: the config's)")
    rec_threshold: float | None = Field(
        None, description="recognition threshold: minimum similarity (IP) or maximum distance (L2) (default: the config's)"
    )
    rec_topk: int | None = Field(None, ge=1, description="labels kept per box (default: the config's)")
