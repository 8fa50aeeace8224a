"""``open_vocabulary_segmentation`` described (:class:`~pxflow.pipelines.spec.PipelineSpec`): read without loading a model."""

from ..config import packaged_config
from ..spec import Endpoint, PipelineSpec

SPEC = PipelineSpec(
    name="open_vocabulary_segmentation",
    pipeline="pxflow.pipelines.open_vocabulary_segmentation.pipeline:OpenVocabularySegmentationPipeline",
    config=packaged_config("open_vocabulary_segmentation.yaml"),
    options="pxflow.pipelines.open_vocabulary_segmentation.options:SamOptions",
    endpoints=(
        Endpoint("/open-vocabulary-segmentation", "pxflow.pipelines.open_vocabulary_segmentation.serving:handle"),
    ),
    takes_index=False,
    description="SAM masks from box or point prompts, or from a detector's boxes",
)
