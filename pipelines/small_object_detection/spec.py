"""``small_object_detection`` described (:class:`~pxflow.pipelines.spec.PipelineSpec`): read without loading a model."""

from ..config import packaged_config
from ..spec import Endpoint, PipelineSpec

SPEC = PipelineSpec(
    name="small_object_detection",
    pipeline="pxflow.pipelines.small_object_detection.pipeline:SmallObjectDetectionPipeline",
    config=packaged_config("small_object_detection.yaml"),
    options="pxflow.pipelines.options:ThresholdOptions",
    endpoints=(
        Endpoint("/small-object-detection", "pxflow.pipelines.small_object_detection.serving:handle"),
    ),
    takes_index=False,
    description="detection tuned for small objects, with optional sliced (tiled) inference",
)
