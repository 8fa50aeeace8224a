"""object_detection, described (:class:`pxflow.pipelines.spec.PipelineSpec`): read without loading any model."""

from importlib import resources

from ..spec import Endpoint, PipelineSpec

SPEC = PipelineSpec(
    name="object_detection",
    pipeline="pxflow.pipelines.object_detection.pipeline:ObjectDetectionPipeline",
    config=str(resources.files("pxflow.configs") / "object_detection.yaml"),
    endpoints=(
        Endpoint("/object-detection", "pxflow.pipelines.object_detection.serving:handle"),
    ),
    description="boxes of the classes the detector knows",
)
