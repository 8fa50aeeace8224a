"""instance_segmentation, described (:class:`pxflow.pipelines.spec.PipelineSpec`): read without loading any model."""

from importlib import resources

from ..spec import Endpoint, PipelineSpec

SPEC = PipelineSpec(
    name="instance_segmentation",
    pipeline="pxflow.pipelines.instance_segmentation.pipeline:InstanceSegmentationPipeline",
    config=str(resources.files("pxflow.configs") / "instance_segmentation.yaml"),
    endpoints=(
        Endpoint("/instance-segmentation", "pxflow.pipelines.instance_segmentation.serving:handle"),
    ),
    description="boxes and a mask per instance",
)
