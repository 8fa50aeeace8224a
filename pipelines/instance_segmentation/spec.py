"""``instance_segmentation`` described (:class:`~pxflow.pipelines.spec.PipelineSpec`): read without loading a model."""

from ..config import packaged_config
from ..spec import Endpoint, PipelineSpec

SPEC = PipelineSpec(
    name="instance_segmentation",
    pipeline="pxflow.pipelines.instance_segmentation.pipeline:InstanceSegmentationPipeline",
    config=packaged_config("instance_segmentation.yaml"),
    options="pxflow.pipelines.options:ThresholdOptions",
    endpoints=(
        Endpoint("/instance-segmentation", "pxflow.pipelines.instance_segmentation.serving:handle"),
    ),
    takes_index=False,
    description="boxes plus full-frame masks (Mask-RT-DETR, MaskRCNN, SOLOv2 ...)",
)
