"""A whole-image classifier registered from outside pxflow: what adding a pipeline takes.

Nothing in pxflow knows this folder. Importing it registers its predictor
(``module_name: image_classification``) and its pipeline (``pipeline_name: toy_classifier``);
its results have neither boxes nor masks, and still become table rows because the result
class says how (``object_records``).
"""

from pxflow.pipelines.predictors import register_predictor
from pxflow.pipelines.registry import register_pipeline

register_predictor("image_classification", "tests.support.toy_classifier.predictor:ClassificationPredictor")
register_pipeline("toy_classifier", "tests.support.toy_classifier.pipeline:ToyClassifierPipeline")

CONFIG = __file__.rsplit("/", 1)[0] + "/toy_classifier.yaml"
