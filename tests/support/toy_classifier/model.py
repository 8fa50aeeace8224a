"""Build the toy classifier's model directory: a real ONNX graph and a PaddleClas-style ``inference.yml``.

The graph averages each normalised channel and scores two classes with weights ``-1`` (dark)
and ``+1`` (bright), then a softmax: a black image is ``dark`` with score
``e^3 / (e^3 + e^-3)`` (each channel mean is -1 after ``(x/255 - 0.5) / 0.5``), a white one
``bright`` with the same score.
"""

from __future__ import annotations

import os

import numpy as np
import yaml


def build(target: str) -> str:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    os.makedirs(target, exist_ok=True)
    weights = numpy_helper.from_array(np.array([[-1.0, 1.0]] * 3, np.float32), "w")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
            helper.make_node("MatMul", ["mean", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "toy_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
        initializer=[weights, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, os.path.join(target, "inference.onnx"))
    config = {
        "Global": {"model_name": "ToyClassifier"},
        "PreProcess": {
            "transform_ops": [
                {"ResizeImage": {"size": [32, 32]}},
                {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "order": ""}},
                {"ToCHWImage": None},
            ]
        },
        "PostProcess": {"Topk": {"topk": 1, "label_list": ["dark", "bright"]}},
    }
    with open(os.path.join(target, "inference.yml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return target
