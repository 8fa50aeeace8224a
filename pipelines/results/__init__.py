"""Result objects with PaddleX's interface (``print``, ``save_to_json``, ``save_to_img``, ``json``, ``img``)."""

from .base import BaseResult, ErrorResult

__all__ = ["BaseResult", "ErrorResult"]
