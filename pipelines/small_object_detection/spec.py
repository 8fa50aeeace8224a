"""small_object_detection, described (:class:`pxflow.pipelines.spec.PipelineSpec`): read without loading any model."""

from importlib import resources

from ..spec import Endpoint, PipelineSpec

SPEC = PipelineSpec(
    name="small_object_detection",
    pipeline="pxflow.pipelines.small_object_detection.pipeline:SmallObjectDetectionPipeline",
    config=str(resources.files("pxflow.configs") / "small_object_detection.yaml"),
    endpoints=(
        Endpoint("/small-object-detection", "pxflow.pipelines.small_object_detection.serving:handle"),
    ),
    description="detection on overlapping slices, merged",
)
