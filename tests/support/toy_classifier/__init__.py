"""A whole-image classifier registered from outside pxflow: what adding a pipeline takes.

Nothing in pxflow knows this folder. Importing it registers its predictor
(``module_name: image_classification``) and its pipeline's spec (``pipeline_name: toy_classifier``,
its own YAML beside this file, its ``predict()`` option ``min_score``, no index): so
``create_pipeline("toy_classifier")`` works by name and ``pxflow annotate --pipeline toy_classifier``
gets a ``--min-score`` flag. Its results have neither boxes nor masks, and still become table rows
because the result class says how (``object_records``).
"""

from pxflow.pipelines.predictors import register_predictor
from pxflow.pipelines.registry import register_pipeline
from pxflow.pipelines.spec import PipelineSpec

CONFIG = __file__.rsplit("/", 1)[0] + "/toy_classifier.yaml"

register_predictor("image_classification", "tests.support.toy_classifier.predictor:ClassificationPredictor")
SPEC = register_pipeline(PipelineSpec(
    name="toy_classifier",
    pipeline="tests.support.toy_classifier.pipeline:ToyClassifierPipeline",
    config=CONFIG,
    options="tests.support.toy_classifier.pipeline:ToyOptions",
    description="one label per image (a test plug-in)",
))
