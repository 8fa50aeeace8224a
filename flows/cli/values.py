"""Parsing CLI values that may be numbers, lists or dicts (thresholds, prompts)."""

from __future__ import annotations

import ast
import json
from typing import Any


def parse_literal(text: str | None) -> Any:
    """A CLI value that may be a number, a JSON list/dict or a Python literal (None stays None)."""
    if text is None:
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    raise ValueError(f"cannot parse {text!r} as a number, list or dict")
