"""Build a small SAM encoder/decoder pair with the *standard* SAM ONNX interface (no real weights exist here).

The standard interface is what segment-anything's ``export_onnx_model.py``, MobileSAM and
samexporter produce; pxflow reads it from a directory holding ``encoder/`` and ``decoder/``
(each ``inference.onnx`` + ``inference.yml``). The graphs are written with ``onnx.helper``
(no torch, no paddle) under exactly the standard names and shapes, and compute something
predictable so tests can check pxflow's feeding of them:

``encoder/``
    ``image`` [1,3,1024,1024] float32 -> ``image_embeddings`` [1,256,64,64]: channels 0-2
    are the 16x16 block means of the (normalised, padded) image, the rest 0.

``decoder/``
    ``image_embeddings`` [1,256,64,64], ``point_coords`` [1,N,2] (1024 frame),
    ``point_labels`` [1,N] (1 fg, 0 bg, 2/3 box corners, -1 padding), ``mask_input``
    [1,1,256,256], ``has_mask_input`` [1], ``orig_im_size`` [2] (h, w) ->
    ``masks`` [1,1,h,w] logits, ``iou_predictions`` [1,1], ``low_res_masks`` [1,1,256,256].
    ``masks`` is +10 on every original pixel whose centre, mapped to the 1024 frame
    (x 1024 / max(h, w)), lies in the box spanned by the label-2 and label-3 points
    (``[x1, x2) x [y1, y2)``) or within :data:`POINT_RADIUS` of a label-1 point, and -10
    elsewhere; the other inputs enter as ``0 *`` terms so every input is really consumed.

Variants for error tests: ``decoder="unexpected"`` writes a decoder whose inputs are not a
SAM interface pxflow can drive (three inputs: ``image_embeddings``, ``point_coords``,
``point_labels``); ``decoder="failing"`` writes a decoder with the standard inputs that
fails at run time on every call (a reshape no embedding fits), always with the same message.

Usage: ``python scripts/build_test_models_sam.py OUT_DIR [--decoder standard|unexpected|failing]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
import yaml

SIZE = 1024
EMBED_SHAPE = [1, 256, 64, 64]
LOW_RES = 256
POINT_RADIUS = 96.0  # 1024-frame pixels
OPSET = 17
PROCESSOR = {"type": "SAMProcessor", "size": SIZE, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
STANDARD_DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")


def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def _const(name: str, value) -> Any:
    _, _, helper, numpy_helper = _onnx()
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _save(graph, model_dir: str, name: str) -> str:
    onnx, _, helper, _ = _onnx()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pxflow-test-sam")
    model.ir_version = 8  # readable by every onnxruntime this project supports
    onnx.checker.check_model(model)
    os.makedirs(model_dir, exist_ok=True)
    onnx.save(model, os.path.join(model_dir, "inference.onnx"))
    with open(os.path.join(model_dir, "inference.yml"), "w", encoding="utf-8") as f:
        yaml.safe_dump({"Global": {"model_name": name}, "Processor": dict(PROCESSOR)}, f, sort_keys=False)
    return model_dir


def encoder_graph():
    """``image`` -> ``image_embeddings``: 16x16 average pooling, then channels 0-2 copied into 256."""
    _, T, helper, numpy_helper = _onnx()
    weight = np.zeros((EMBED_SHAPE[1], 3, 1, 1), np.float32)
    weight[[0, 1, 2], [0, 1, 2]] = 1.0
    nodes = [
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Conv", ["pooled", "w"], ["image_embeddings"]),
    ]
    return helper.make_graph(
        nodes, "sam_encoder",
        [helper.make_tensor_value_info("image", T.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("image_embeddings", T.FLOAT, EMBED_SHAPE)],
        initializer=[numpy_helper.from_array(weight, "w")],
    )


def _decoder_inputs(names) -> list:
    _, T, helper, _ = _onnx()
    shapes = {
        "image_embeddings": EMBED_SHAPE, "point_coords": [1, "num_points", 2], "point_labels": [1, "num_points"],
        "mask_input": [1, 1, LOW_RES, LOW_RES], "has_mask_input": [1], "orig_im_size": [2],
    }
    return [helper.make_tensor_value_info(n, T.FLOAT, shapes[n]) for n in names]


def _decoder_outputs() -> list:
    _, T, helper, _ = _onnx()
    return [
        helper.make_tensor_value_info("masks", T.FLOAT, [1, 1, "h", "w"]),
        helper.make_tensor_value_info("iou_predictions", T.FLOAT, [1, 1]),
        helper.make_tensor_value_info("low_res_masks", T.FLOAT, [1, 1, LOW_RES, LOW_RES]),
    ]


def _failure(failing: bool) -> list:
    """``s3 = s2`` (standard), or ``s2 + 0 * mean(reshape(embeddings, [7, -1]))``, which fails on every call
    (256*64*64 = 2**20 values do not fill 7 rows) with the same message, once pxflow feeds has_mask_input 0."""
    _, TensorProto, helper, _ = _onnx()
    n = helper.make_node
    if not failing:
        return [n("Identity", ["s2"], ["s3"])]
    # the row count comes from an input (has_mask_input + 7), so the model loads and only the run fails
    return [_const("seven", np.float32(7.0)), _const("minus1", np.array([-1], np.int64)),
            n("Add", ["has_mask_input", "seven"], ["rows_f"]), n("Cast", ["rows_f"], ["rows"], to=TensorProto.INT64),
            n("Concat", ["rows", "minus1"], ["rows7"], axis=0), n("Reshape", ["image_embeddings", "rows7"], ["bad"]),
            n("ReduceMean", ["bad"], ["bad_mean"], keepdims=0), n("Add", ["s2", "bad_mean"], ["s3"])]


def decoder_graph(failing: bool = False):
    """The standard decoder computing box/disc logits at ``orig_im_size`` (see the module docstring)."""
    _, T, helper, _ = _onnx()
    n = helper.make_node
    nodes = [
        _const("zero_f", np.float32(0.0)), _const("one_f", np.float32(1.0)), _const("half", np.float32(0.5)),
        _const("size", np.float32(SIZE)), _const("r2", np.float32(POINT_RADIUS**2)),
        _const("lab1", np.float32(1.0)), _const("lab2", np.float32(2.0)), _const("lab3", np.float32(3.0)),
        _const("twenty", np.float32(20.0)), _const("ten", np.float32(10.0)),
        _const("i0", np.array([0], np.int64)), _const("i1", np.array([1], np.int64)), _const("i2", np.array([2], np.int64)),
        _const("shape_n11", np.array([-1, 1, 1], np.int64)), _const("shape_1h1", np.array([1, -1, 1], np.int64)),
        _const("shape_11w", np.array([1, 1, -1], np.int64)),
        # h, w and the 1024-frame scale of the original image
        n("Slice", ["orig_im_size", "i0", "i1"], ["h_f"]), n("Slice", ["orig_im_size", "i1", "i2"], ["w_f"]),
        n("ReduceMax", ["orig_im_size"], ["long"], keepdims=0), n("Div", ["size", "long"], ["scale"]),
        n("Squeeze", ["h_f"], ["h_s"]), n("Squeeze", ["w_f"], ["w_s"]),
        n("Range", ["zero_f", "h_s", "one_f"], ["ys"]), n("Range", ["zero_f", "w_s", "one_f"], ["xs"]),
        n("Add", ["ys", "half"], ["yc"]), n("Add", ["xs", "half"], ["xc"]),
        n("Mul", ["yc", "scale"], ["gy0"]), n("Mul", ["xc", "scale"], ["gx0"]),
        n("Reshape", ["gy0", "shape_1h1"], ["gy"]), n("Reshape", ["gx0", "shape_11w"], ["gx"]),
        # prompts: px, py, label as [N,1,1]
        n("Slice", ["point_coords", "i0", "i1", "i2"], ["px0"]), n("Slice", ["point_coords", "i1", "i2", "i2"], ["py0"]),
        n("Reshape", ["px0", "shape_n11"], ["px"]), n("Reshape", ["py0", "shape_n11"], ["py"]),
        n("Reshape", ["point_labels", "shape_n11"], ["lab"]),
        # discs around label-1 points
        n("Sub", ["gx", "px"], ["dx"]), n("Sub", ["gy", "py"], ["dy"]),
        n("Mul", ["dx", "dx"], ["dx2"]), n("Mul", ["dy", "dy"], ["dy2"]), n("Add", ["dx2", "dy2"], ["d2"]),
        n("LessOrEqual", ["d2", "r2"], ["near"]), n("Equal", ["lab", "lab1"], ["is_fg"]),
        n("And", ["near", "is_fg"], ["disc_b"]), n("Cast", ["disc_b"], ["disc_f"], to=T.FLOAT),
        n("ReduceMax", ["disc_f"], ["disc"], axes=[0], keepdims=0),  # [h, w]
        # the box spanned by the label-2 and label-3 corners (zero-area when there is none)
        n("Equal", ["lab", "lab2"], ["is_tl_b"]), n("Equal", ["lab", "lab3"], ["is_br_b"]),
        n("Cast", ["is_tl_b"], ["is_tl"], to=T.FLOAT), n("Cast", ["is_br_b"], ["is_br"], to=T.FLOAT),
        n("Mul", ["px", "is_tl"], ["x1s"]), n("Mul", ["py", "is_tl"], ["y1s"]),
        n("Mul", ["px", "is_br"], ["x2s"]), n("Mul", ["py", "is_br"], ["y2s"]),
        n("ReduceSum", ["x1s", "i0"], ["x1"], keepdims=0), n("ReduceSum", ["y1s", "i0"], ["y1"], keepdims=0),
        n("ReduceSum", ["x2s", "i0"], ["x2"], keepdims=0), n("ReduceSum", ["y2s", "i0"], ["y2"], keepdims=0),
        n("GreaterOrEqual", ["gx", "x1"], ["c1"]), n("Less", ["gx", "x2"], ["c2"]),
        n("GreaterOrEqual", ["gy", "y1"], ["c3"]), n("Less", ["gy", "y2"], ["c4"]),
        n("And", ["c1", "c2"], ["cx"]), n("And", ["c3", "c4"], ["cy"]), n("And", ["cx", "cy"], ["box_b"]),
        n("Cast", ["box_b"], ["box3"], to=T.FLOAT), n("ReduceMax", ["box3"], ["box"], axes=[0], keepdims=0),  # [h, w]
        # logits: +10 inside, -10 outside, plus 0 * every other input
        n("Max", ["disc", "box"], ["inside"]),
        n("ReduceMean", ["image_embeddings"], ["emb_mean"], keepdims=0),
        n("ReduceMean", ["mask_input"], ["mask_mean"], keepdims=0),
        n("ReduceMean", ["has_mask_input"], ["has_mean"], keepdims=0),
        n("Add", ["emb_mean", "mask_mean"], ["s1"]), n("Add", ["s1", "has_mean"], ["s2"]),
        *_failure(failing),
        n("Mul", ["s3", "zero_f"], ["nothing"]), n("Sub", ["nothing", "ten"], ["base"]),
        n("Mul", ["inside", "twenty"], ["lift"]), n("Add", ["lift", "base"], ["logits"]),
        n("Unsqueeze", ["logits", "i0"], ["m3"]), n("Unsqueeze", ["m3", "i0"], ["masks"]),
        _const("iou_shape", np.array([1, 1], np.int64)), n("ReduceMean", ["inside"], ["cover"], keepdims=0),
        n("Expand", ["cover", "iou_shape"], ["iou_predictions"]),
        n("Mul", ["mask_input", "zero_f"], ["low0"]), n("Sub", ["low0", "ten"], ["low_res_masks"]),
    ]
    return helper.make_graph(nodes, "sam_decoder", _decoder_inputs(STANDARD_DECODER_INPUTS), _decoder_outputs())


def unexpected_decoder_graph():
    """A decoder with three of the six inputs: no SAM layout pxflow can drive."""
    _, T, helper, _ = _onnx()
    n = helper.make_node
    nodes = [
        n("ReduceMean", ["image_embeddings"], ["a"], keepdims=0), n("ReduceMean", ["point_coords"], ["b"], keepdims=0),
        n("ReduceMean", ["point_labels"], ["c"], keepdims=0), n("Add", ["a", "b"], ["ab"]), n("Add", ["ab", "c"], ["s"]),
        _const("shape", np.array([1, 1, 1, 1], np.int64)), n("Expand", ["s", "shape"], ["masks"]),
    ]
    outputs = [helper.make_tensor_value_info("masks", T.FLOAT, [1, 1, 1, 1])]
    return helper.make_graph(nodes, "sam_decoder_unexpected", _decoder_inputs(STANDARD_DECODER_INPUTS[:3]), outputs)


def build_standard_sam(out: str, decoder: str = "standard", name: str = "SAM-standard") -> str:
    """``out/encoder`` + ``out/decoder`` (each ``inference.onnx`` + ``inference.yml``); returns ``out``."""
    graphs = {"standard": decoder_graph, "failing": lambda: decoder_graph(failing=True), "unexpected": unexpected_decoder_graph}
    if decoder not in graphs:
        raise ValueError(f"decoder must be one of {sorted(graphs)}, got {decoder!r}")
    _save(encoder_graph(), os.path.join(out, "encoder"), f"{name}_encoder")
    _save(graphs[decoder](), os.path.join(out, "decoder"), f"{name}_decoder")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="directory to write encoder/ and decoder/ into")
    p.add_argument("--decoder", default="standard", choices=["standard", "unexpected", "failing"])
    args = p.parse_args(argv)
    print(build_standard_sam(args.out, args.decoder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
