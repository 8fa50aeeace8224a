"""``open_vocabulary_segmentation``'s ``predict()`` options: which SAM model, and its prompts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..options import PredictOptions


class SamOptions(PredictOptions):
    """``predict(input, prompt_type="box"|"point", prompt=...)``; the prompts' shape is checked by the pipeline."""

    prompt_type: Literal["box", "point"] = Field("box", description="prompt type: box (SAM-H_box) or point (SAM-H_point)")
    prompt: Any = Field(
        None,
        description="prompts: [[x1,y1,x2,y2], ...] (box) or [[x,y], ...] (point), or per_input (each input's own, "
                    "e.g. a manifest's prompt column); default: boxes from Pxflow.prompts_from",
    )
