"""open_vocabulary_segmentation, described (:class:`pxflow.pipelines.spec.PipelineSpec`): read without loading any model."""

from importlib import resources

from ..spec import Endpoint, PipelineSpec

SPEC = PipelineSpec(
    name="open_vocabulary_segmentation",
    pipeline="pxflow.pipelines.open_vocabulary_segmentation.pipeline:OpenVocabularySegmentationPipeline",
    config=str(resources.files("pxflow.configs") / "open_vocabulary_segmentation.yaml"),
    endpoints=(
        Endpoint("/open-vocabulary-segmentation", "pxflow.pipelines.open_vocabulary_segmentation.serving:handle"),
    ),
    description="SAM masks from box or point prompts",
)
