"""``PP-ShiTuV2`` described (:class:`~pxflow.pipelines.spec.PipelineSpec`): read without loading a model."""

from ..config import packaged_config
from ..spec import Endpoint, PipelineSpec

SPEC = PipelineSpec(
    name="PP-ShiTuV2",
    pipeline="pxflow.pipelines.pp_shitu_v2.pipeline:ShiTuV2Pipeline",
    config=packaged_config("PP-ShiTuV2.yaml"),
    options="pxflow.pipelines.pp_shitu_v2.options:ShiTuOptions",
    endpoints=(
        Endpoint("/shitu-infer", "pxflow.pipelines.pp_shitu_v2.serving:infer"),
        Endpoint("/shitu-index-build", "pxflow.pipelines.pp_shitu_v2.serving:index_build"),
        Endpoint("/shitu-index-add", "pxflow.pipelines.pp_shitu_v2.serving:index_add"),
        Endpoint("/shitu-index-remove", "pxflow.pipelines.pp_shitu_v2.serving:index_remove"),
    ),
    takes_index=True,
    description="general image recognition: mainbody detection, features, and a search of an index",
)
