"""Predictors: one model type each (load, preprocess, infer, postprocess, ``identity()``).

As PaddleX keeps ``models/`` apart from ``pipelines/``: pipelines compose the predictors
registered here and never import each other. Adding a model type is adding a file with a
:class:`Predictor` subclass and registering it (:func:`register_predictor`; a package outside
pxflow calls it from its ``pxflow.plugins`` entry point, :mod:`pxflow.pipelines.plugins`).
"""

from .base import LazyPredictor, ModelIdentity, PipelineIdentity, Predictor, submodule
from .registry import PREDICTORS, create_predictor, predictor_class, register_predictor

__all__ = [
    "LazyPredictor",
    "ModelIdentity",
    "PREDICTORS",
    "PipelineIdentity",
    "Predictor",
    "create_predictor",
    "predictor_class",
    "register_predictor",
    "submodule",
]
