"""The SAM predictor: three model layouts, told apart by the graphs' input names (never by their count).

PaddleX layout (SAM-H_box, SAM-H_point; one graph per prompt type):
    inputs ``prompt`` ([N, 4] boxes, or [1, 1, 2]: one point, in the 1024 frame) and
    one image input (``img`` [1, 3, 1024, 1024] float32); output low-res mask logits
    [N, 1, 256, 256]. ``inference.yml`` has ``Processor: {type: SAMProcessor,
    size, mean, std}``. A point graph takes one point, so N points cost N full runs.

Split layout (pxflow): one model directory holding ``inference.yml`` (the same
``Processor`` section) and two ordinary model directories:
    ``encoder/``: one image input [1, 3, S, S] -> image embedding (any shape);
    ``decoder/``: ``prompt`` [N, 4] or [N, 1, 2] and the embedding -> [N, 1, s, s].

Standard layout (segment-anything's ``export_onnx_model.py``, MobileSAM, samexporter),
in the same ``encoder/`` + ``decoder/`` directories, recognised by the decoder's inputs
:data:`STANDARD_DECODER_INPUTS`: ``image_embeddings`` [1,256,64,64], ``point_coords``
[1,N,2], ``point_labels`` [1,N], ``mask_input`` [1,1,256,256], ``has_mask_input`` [1],
``orig_im_size`` [2] -> ``masks`` (logits at ``orig_im_size``), ``iou_predictions``,
``low_res_masks``. Each prompt is one decoder call, fed as segment-anything's
``SamPredictor`` feeds it (multimask off, no previous mask): a box is its two corners
with labels 2 and 3, a point has label 1 plus the padding point (0, 0) with label -1.
The decoder returns masks on the original frame, so they are only thresholded.

In both two-graph layouts the embedding is computed once per image and every prompt
of that image reuses it, which is what makes many prompts cheap: the ViT encoder is
nearly all of SAM's cost. A graph that fits none of the layouts is a
:class:`ModelDirError` naming the directory, its inputs and what was expected, raised when
the pipeline is created (:meth:`SamPredictor.check` reads the graphs' input names from their
files, loading no weights; a legacy ``.pdmodel`` is checked when it loads), never once per image.

Preprocessing follows SAM: RGB, long side to ``size``, normalise with the mean/std in
0-255 (``Processor`` of the directory's ``inference.yml``, else the encoder's, else
SAM's), zero-pad bottom-right to ``size x size``. Low-res logits (PaddleX and split
layouts) are upsampled bilinearly to ``size``, the padding is cropped, the rest
resized to the original image and thresholded ``> 0``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import yaml

from ..io.uri import parse_uri
from ..models import create_backend, load_model_spec, reported_model_name, resolve_model_dir
from ..models.graph_io import graph_io
from ..models.model_dir import CONFIG_NAMES, ModelDirError
from ..models.source import official_model_dir
from ..ops.preprocess import NormalizeImage, Pad, Permute, Preprocessor, ResizeByLong, Sample
from ..settings import PxflowSettings
from .base import ModelIdentity, Predictor, model_source

SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)


def _read_config(model_dir: str) -> dict[str, Any]:
    """The directory's ``inference.yml``; a two-graph directory without one uses its encoder's
    (less ``Global``: the encoder's model name is not the pair's, the directory's name is)."""
    for directory in (model_dir, os.path.join(model_dir, "encoder")) if is_split_dir(model_dir) else (model_dir,):
        for name in CONFIG_NAMES:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    config = yaml.safe_load(f) or {}
                return config if directory == model_dir else {k: v for k, v in config.items() if k != "Global"}
    raise ModelDirError(f"{model_dir}: no {' or '.join(CONFIG_NAMES)}")


def is_split_dir(model_dir: str) -> bool:
    return os.path.isdir(os.path.join(model_dir, "encoder")) and os.path.isdir(os.path.join(model_dir, "decoder"))


def own_name(model_dir: str) -> str:
    """The name a SAM directory gives itself: its ``Global.model_name`` (never its encoder's), else its folder name."""
    return str((_read_config(model_dir).get("Global") or {}).get("model_name") or os.path.basename(os.path.normpath(model_dir)))


#: the decoder inputs of the standard SAM ONNX export (segment-anything, MobileSAM, samexporter)
STANDARD_DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
#: the prompt input of PaddleX's graphs and pxflow's split decoder
PROMPT_INPUT = "prompt"
PADDLEX, SPLIT, STANDARD = "paddlex", "split", "standard"
_EXPECTED_DECODER = (
    f"expected the standard SAM decoder inputs ({', '.join(STANDARD_DECODER_INPUTS)}) "
    f"or pxflow's split decoder ({PROMPT_INPUT!r} and one image-embedding input)"
)


def sam_layout(model_dir: str, graphs: Mapping[str, Any]) -> str:
    """:data:`PADDLEX`, :data:`SPLIT` or :data:`STANDARD` from the graphs' input names; else ``ModelDirError``.

    ``graphs`` is ``{"whole": ...}`` or ``{"encoder": ..., "decoder": ...}``, each a loaded
    :class:`~pipelines.models.backends.Backend` or a :class:`~pipelines.models.graph_io.GraphIO`
    (both have ``input_names`` and ``output_names``). Checked when the pipeline is created and
    again when the model loads, so that a graph the predictor cannot feed fails the run once, up front.
    """
    if "whole" in graphs:
        names = list(graphs["whole"].input_names)
        if len(names) == 2 and PROMPT_INPUT in names:
            return PADDLEX
        raise ModelDirError(
            f"{model_dir}: cannot drive this SAM graph: its inputs are {names}; expected PaddleX's SAM-H layout "
            f"({PROMPT_INPUT!r} and one image input), or encoder/ + decoder/ sub-directories"
        )
    encoder_inputs = list(graphs["encoder"].input_names)
    if len(encoder_inputs) != 1:
        raise ModelDirError(
            f"{os.path.join(model_dir, 'encoder')}: cannot drive this SAM encoder: its inputs are {encoder_inputs}; "
            "expected one image input [1, 3, S, S]"
        )
    decoder = graphs["decoder"]
    names = list(decoder.input_names)
    if set(names) == set(STANDARD_DECODER_INPUTS) and len(names) == len(STANDARD_DECODER_INPUTS):
        if "masks" not in decoder.output_names:
            raise ModelDirError(
                f"{os.path.join(model_dir, 'decoder')}: a standard SAM decoder without a 'masks' output "
                f"(outputs {list(decoder.output_names)})"
            )
        return STANDARD
    if len(names) == 2 and PROMPT_INPUT in names:
        return SPLIT
    raise ModelDirError(f"{os.path.join(model_dir, 'decoder')}: cannot drive this SAM decoder: its inputs are {names}; {_EXPECTED_DECODER}")


def standard_prompt(prompt: np.ndarray, prompt_type: str) -> tuple[np.ndarray, np.ndarray]:
    """One model-frame prompt as the standard decoder's ``(point_coords [1,N,2], point_labels [1,N])``.

    As segment-anything's ``SamPredictor`` builds them: a box is its corners labelled 2 and 3;
    a point is labelled 1 and, there being no box, followed by the padding point (0, 0) labelled -1.
    """
    if prompt_type == "box":
        coords, labels = np.asarray(prompt, np.float32).reshape(2, 2), np.array([2.0, 3.0], np.float32)
    else:
        coords = np.concatenate([np.asarray(prompt, np.float32).reshape(1, 2), np.zeros((1, 2), np.float32)])
        labels = np.array([1.0, -1.0], np.float32)
    return coords[None], labels[None]


#: PaddleX module_name -> the prompt type its graph takes
PROMPT_MODULES = {"box_prompt_segmentation": "box", "point_prompt_segmentation": "point"}
SPLIT_PARTS = ("encoder", "decoder")


class SamPredictor(Predictor):
    """One prompt type's SAM: ``preprocess`` (any thread), then ``segment`` (image + prompts -> masks)."""

    module_names = tuple(PROMPT_MODULES)

    def __init__(
        self,
        prompt_type: str,
        model_name: str | None = None,
        model_dir: str | None = None,
        device: str = "cpu",
        backend: str = "auto",
        cpu_threads: int | None = None,
        max_prompts_per_call: int = 64,
    ) -> None:
        self.prompt_type = prompt_type
        root = resolve_model_dir(model_name, model_dir)
        if not os.path.isdir(root):
            raise ModelDirError(f"model directory not found: {root}")
        self.model_dir = root
        self.config = _read_config(root)
        self.model_name = reported_model_name(own_name(root), model_name, model_dir)
        self.split = is_split_dir(root)
        make = lambda d: create_backend(load_model_spec(d), backend=backend, device=device, threads=cpu_threads)  # noqa: E731
        if self.split:
            self.encoder = make(os.path.join(root, "encoder"))
            self.decoder = make(os.path.join(root, "decoder"))
            self.graphs = [self.encoder, self.decoder]
            self.layout = sam_layout(root, {"encoder": self.encoder, "decoder": self.decoder})
        else:
            self.whole = make(root)
            self.graphs = [self.whole]
            self.layout = sam_layout(root, {"whole": self.whole})
        proc = dict(self.config.get("Processor") or {})
        self.size = int(proc.get("size", 1024))
        mean = proc.get("mean", proc.get("image_mean", SAM_MEAN))
        std = proc.get("std", proc.get("image_std", SAM_STD))
        self.preprocessor = Preprocessor(
            [
                ResizeByLong(self.size),
                NormalizeImage(mean=mean, std=std, is_scale=False),
                Pad(size=[self.size, self.size], fill_value=[0.0, 0.0, 0.0]),
                Permute(),
            ]
        )
        self.max_prompts = max(1, int(max_prompts_per_call))
        # official point graphs take exactly one point ([1, 1, 2])
        self.prompts_per_call = 1 if (prompt_type == "point" and not self.split) else self.max_prompts

    @classmethod
    def from_submodule(cls, sub: Mapping[str, Any], settings: PxflowSettings, device: str) -> "SamPredictor":
        """Build from ``SubModules.BoxPromptSegmentation`` / ``PointPromptSegmentation`` (by ``module_name``)."""
        module = str(sub.get("module_name") or "box_prompt_segmentation")
        if module not in PROMPT_MODULES:
            raise ValueError(f"SAM module_name must be one of {sorted(PROMPT_MODULES)}, got {module!r}")
        return cls(
            PROMPT_MODULES[module],
            model_name=sub.get("model_name"),
            model_dir=sub.get("model_dir"),
            device=device,
            backend=settings.backend,
            cpu_threads=settings.cpu_threads,
            max_prompts_per_call=settings.max_prompts_per_call,
        )

    @classmethod
    def identity(cls, sub: Mapping[str, Any], role: str) -> ModelIdentity:
        """Both graphs of a split directory count (encoder and decoder), else the one graph."""
        name, directory = model_source(sub)
        root = resolve_model_dir(name, directory)
        if not is_split_dir(root):
            return super().identity(sub, role)
        digest = hashlib.sha256()
        for part in SPLIT_PARTS:
            digest.update(f"{part}={load_model_spec(os.path.join(root, part)).sha256()}\n".encode())
        return ModelIdentity(role, reported_model_name(own_name(root), name, directory), digest.hexdigest())

    @classmethod
    def check(cls, sub: Mapping[str, Any], settings: PxflowSettings, device: str) -> None:
        """Refuse, at pipeline creation, a directory whose graphs fit none of the three layouts.

        Reads the graphs' input names from their files (:func:`graph_io`), loading no weights, so
        the check costs nothing when the model is never used. Only a directory already on this
        machine is checked: an ``s3://`` one, an official model not yet in the cache, or a
        directory that does not exist is fetched (and checked, or reported) on first use, as a
        box-only run must neither fetch nor require the point model.
        """
        name, directory = model_source(sub)
        if directory:
            parsed = parse_uri(directory)
            if parsed.scheme != "file":
                return
            root = parsed.path
        else:
            root = official_model_dir(str(name))
        if not os.path.isdir(root):
            return
        parts = {part: os.path.join(root, part) for part in SPLIT_PARTS} if is_split_dir(root) else {"whole": root}
        graphs = {part: graph_io(load_model_spec(path), settings.backend, device) for part, path in parts.items()}
        if all(g is not None for g in graphs.values()):
            sam_layout(root, graphs)

    # -- stages -----------------------------------------------------------------------------
    def preprocess(self, image_bgr: np.ndarray) -> Sample:
        return self.preprocessor(image_bgr)

    def to_model_frame(self, prompts: np.ndarray, sample: Sample) -> np.ndarray:
        """Original-pixel prompts -> the resized frame the model sees (x by scale_w, y by scale_h)."""
        out = np.array(prompts, dtype=np.float32, copy=True)
        out[:, 0::2] *= sample.scale_w
        out[:, 1::2] *= sample.scale_h
        return out

    def _feed_prompts(self, chunk: np.ndarray) -> np.ndarray:
        return chunk.reshape(-1, 4) if self.prompt_type == "box" else chunk.reshape(-1, 1, 2)

    def logits(self, sample: Sample, prompts: np.ndarray) -> np.ndarray:
        """Low-res mask logits ``[N, 1, s, s]`` for ``prompts`` (already in the model frame)."""
        graph, other = (self.decoder, self._embed(sample)) if self.split else (self.whole, sample.img[None])
        (other_name,) = [n for n in graph.input_names if n != PROMPT_INPUT]
        parts: list[np.ndarray] = []
        for start in range(0, len(prompts), self.prompts_per_call):
            chunk = self._feed_prompts(prompts[start : start + self.prompts_per_call])
            parts.append(graph.run({other_name: other, PROMPT_INPUT: chunk})[0])
        return np.concatenate([p.reshape(-1, 1, *p.shape[-2:]) for p in parts])

    def _embed(self, sample: Sample) -> np.ndarray:
        return self.encoder.run({self.encoder.input_names[0]: sample.img[None]})[0]

    def standard_masks(self, sample: Sample, prompts: np.ndarray) -> np.ndarray:
        """Boolean ``[N, H, W]`` masks from the standard decoder, one call per (model-frame) prompt."""
        h, w = sample.ori_h, sample.ori_w
        fixed = {
            "image_embeddings": self._embed(sample),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([h, w], np.float32),
        }
        masks_at = self.decoder.output_names.index("masks")
        out = np.empty((len(prompts), h, w), dtype=bool)
        for i, prompt in enumerate(prompts):
            coords, labels = standard_prompt(prompt, self.prompt_type)
            masks = self.decoder.run({**fixed, "point_coords": coords, "point_labels": labels})[masks_at]
            if masks.ndim != 4 or masks.shape[-2:] != (h, w):
                raise ValueError(f"the SAM decoder returned masks of shape {list(masks.shape)}, expected [1, K, {h}, {w}] (orig_im_size)")
            out[i] = masks[0, 0] > 0  # multimask off: the first mask
        return out

    def postprocess(self, logits: np.ndarray, sample: Sample) -> np.ndarray:
        """Logits -> boolean ``[N, H, W]`` masks on the original frame (SAM's ``postprocess_masks``, ``> 0``)."""
        new_h = int(round(sample.ori_h * sample.scale_h))
        new_w = int(round(sample.ori_w * sample.scale_w))
        out = np.empty((logits.shape[0], sample.ori_h, sample.ori_w), dtype=bool)
        for i, low in enumerate(logits[:, 0]):
            up = cv2.resize(low.astype(np.float32), (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            up = up[:new_h, :new_w]
            out[i] = cv2.resize(up, (sample.ori_w, sample.ori_h), interpolation=cv2.INTER_LINEAR) > 0
        return out

    def infer(self, batch: Sequence[tuple[Sample, np.ndarray]]) -> list[np.ndarray]:
        """Boolean ``[N_i, H_i, W_i]`` masks per ``(sample, original-pixel prompts)`` pair: the predictor contract.

        Images are segmented one at a time (every prompt of an image reuses its one embedding).
        """
        return [self.segment(sample, prompts) for sample, prompts in batch]

    def segment(self, sample: Sample, prompts: np.ndarray) -> np.ndarray:
        """Boolean masks, one per prompt (original-pixel prompts in, original-frame masks out)."""
        if len(prompts) == 0:
            return np.zeros((0, sample.ori_h, sample.ori_w), dtype=bool)
        if self.layout == STANDARD:
            return self.standard_masks(sample, self.to_model_frame(prompts, sample))
        return self.postprocess(self.logits(sample, self.to_model_frame(prompts, sample)), sample)
