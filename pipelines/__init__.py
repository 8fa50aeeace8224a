"""pxflow inference: PaddleX-compatible pipelines, usable alone (no Prefect here).

>>> from pipelines import create_pipeline
>>> pipe = create_pipeline("object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": "..."}}})
>>> for res in pipe.predict("images/"):
...     res.print()
"""

from .registry import PIPELINES, create_pipeline

__all__ = ["PIPELINES", "create_pipeline"]
