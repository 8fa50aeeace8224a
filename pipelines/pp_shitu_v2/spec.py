"""PP-ShiTuV2, described (:class:`pxflow.pipelines.spec.PipelineSpec`): read without loading any model."""

from importlib import resources

from ..spec import Endpoint, PipelineSpec

SPEC = PipelineSpec(
    name="PP-ShiTuV2",
    pipeline="pxflow.pipelines.pp_shitu_v2.pipeline:ShiTuV2Pipeline",
    config=str(resources.files("pxflow.configs") / "PP-ShiTuV2.yaml"),
    endpoints=(
        Endpoint("/shitu-infer", "pxflow.pipelines.pp_shitu_v2.serving:infer"),
        Endpoint("/shitu-index-build", "pxflow.pipelines.pp_shitu_v2.serving:index_build"),
        Endpoint("/shitu-index-add", "pxflow.pipelines.pp_shitu_v2.serving:index_add"),
        Endpoint("/shitu-index-remove", "pxflow.pipelines.pp_shitu_v2.serving:index_remove"),
    ),
    takes_index=True,
    description="detection, then recognition against a versioned index",
)
