"""``object_detection`` described (:class:`~pxflow.pipelines.spec.PipelineSpec`): read without loading a model."""

from ..config import packaged_config
from ..spec import Endpoint, PipelineSpec

SPEC = PipelineSpec(
    name="object_detection",
    pipeline="pxflow.pipelines.object_detection.pipeline:ObjectDetectionPipeline",
    config=packaged_config("object_detection.yaml"),
    options="pxflow.pipelines.options:ThresholdOptions",
    endpoints=(
        Endpoint("/object-detection", "pxflow.pipelines.object_detection.serving:handle"),
    ),
    takes_index=False,
    description="boxes with class, label and score (PicoDet, RT-DETR, PP-YOLOE ...)",
)
