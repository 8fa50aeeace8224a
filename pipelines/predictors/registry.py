"""PaddleX ``module_name`` -> predictor class, imported lazily so each model type's deps load on use.

A ``SubModules.<X>`` section names its model type with ``module_name`` (PaddleX's own key);
a pipeline says which type it expects when the section leaves it out. Installed plug-ins
register theirs from their ``pxflow.plugins`` entry point (:mod:`pxflow.pipelines.plugins`),
loaded on the first lookup of a name not registered here.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from ..plugins import load_plugins
from ..settings import PxflowSettings
from .base import Predictor

#: module_name -> "module:Class" (or the class itself, once registered at run time)
PREDICTORS: dict[str, Any] = {
    "object_detection": "pxflow.pipelines.predictors.detection:DetectionPredictor",
    "small_object_detection": "pxflow.pipelines.predictors.detection:DetectionPredictor",
    "mainbody_detection": "pxflow.pipelines.predictors.detection:DetectionPredictor",
    "instance_segmentation": "pxflow.pipelines.predictors.instance_segmentation:InstanceSegPredictor",
    "image_feature": "pxflow.pipelines.predictors.image_feature:FeaturePredictor",
    "box_prompt_segmentation": "pxflow.pipelines.predictors.sam:SamPredictor",
    "point_prompt_segmentation": "pxflow.pipelines.predictors.sam:SamPredictor",
}


def register_predictor(module_name: str, target: "type[Predictor] | str") -> None:
    """Serve ``module_name`` with ``target`` (a class or ``"package.module:Class"``)."""
    PREDICTORS[module_name] = target


def _resolve(target: Any) -> type[Predictor]:
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target


def predictor_class(module_name: str) -> type[Predictor]:
    """The class serving ``module_name`` (entry points of installed plug-ins included)."""
    if module_name not in PREDICTORS:
        load_plugins()
    try:
        return _resolve(PREDICTORS[module_name])
    except KeyError:
        raise ValueError(f"no predictor for module_name {module_name!r}; registered: {sorted(PREDICTORS)}") from None


def create_predictor(sub: Mapping[str, Any], settings: PxflowSettings, device: str, default_module: str) -> Predictor:
    """Build the predictor a ``SubModules`` section describes (its ``module_name``, else ``default_module``)."""
    module = str(sub.get("module_name") or default_module)
    return predictor_class(module).from_submodule({**sub, "module_name": module}, settings, device)


def section_identity(sub: Mapping[str, Any], role: str, default_module: str):
    """:meth:`Predictor.identity` of a section, through the class that would serve it."""
    module = str(sub.get("module_name") or default_module)
    return predictor_class(module).identity({**sub, "module_name": module}, role)


def check_section(sub: Mapping[str, Any], settings: PxflowSettings, device: str, default_module: str) -> None:
    """:meth:`Predictor.check` of a section, through the class that would serve it (loads nothing)."""
    module = str(sub.get("module_name") or default_module)
    predictor_class(module).check({**sub, "module_name": module}, settings, device)
