"""The input and output names of a model's graph, read from its files without loading its weights.

A predictor that can only drive certain graphs (SAM's three layouts) checks them when the pipeline
is created, so that a wrong model fails the run once, up front, naming the directory. Loading a
session for that would cost what the check should save (SAM-H's encoder is 2.5 GB, and a run that
never uses the point model must not load it), so the names come from the graph files alone:

- ONNX: the protobuf without external data (``onnx.load(..., load_external_data=False)``); graph
  inputs that are initializers (older exporters list weights as inputs) are not inputs;
- Paddle 3 PIR (``inference.json``): the ``data`` ops' and ``fetch`` ops' ``name`` attributes.

Legacy Paddle programs (``.pdmodel``) are a protobuf that needs Paddle itself to parse: for them,
and for a file that does not parse, the answer is ``None`` and the check is left to the load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .backends import choose_backend
from .model_dir import ModelSpec


@dataclass(frozen=True)
class GraphIO:
    """What a graph declares: the same two attributes a loaded :class:`~.backends.Backend` has."""

    input_names: list[str]
    output_names: list[str]


def graph_io(spec: ModelSpec, backend: str = "auto", device: str = "cpu") -> GraphIO | None:
    """The names of the graph ``backend`` would load from ``spec``'s directory, or ``None`` when not cheap."""
    chosen = choose_backend(spec, backend, device)
    if chosen == "onnxruntime" and spec.onnx_file:
        return _onnx_io(spec.onnx_file)
    if chosen == "paddle" and spec.paddle_format == "pir" and spec.paddle_files:
        return _pir_io(spec.paddle_files[0])
    return None


def _onnx_io(path: str) -> GraphIO | None:
    import onnx

    try:
        graph = onnx.load(path, load_external_data=False).graph
    except Exception:  # not ONNX: the backend's load names the file and the reason
        return None
    weights = {t.name for t in graph.initializer}
    return GraphIO([i.name for i in graph.input if i.name not in weights], [o.name for o in graph.output])


def _pir_io(path: str) -> GraphIO | None:
    try:
        with open(path, encoding="utf-8") as f:
            program = json.load(f)
        ops = [op for region in program["program"]["regions"] for block in region["blocks"] for op in block["ops"]]
    except Exception:  # not a PIR program: the backend's load reports it
        return None
    inputs = [_name(op) for op in ops if str(op.get("#", "")).endswith(".data")]
    outputs = [_name(op) for op in ops if str(op.get("#", "")).endswith(".fetch")]
    if None in inputs or None in outputs or not inputs:
        return None
    return GraphIO(inputs, outputs)  # type: ignore[arg-type]


def _name(op: dict[str, Any]) -> str | None:
    for attr in op.get("A") or ():
        if isinstance(attr, dict) and attr.get("N") == "name":
            return str((attr.get("AT") or {}).get("D"))
    return None
