"""The SAM predictor: SAM as PaddleX exports it, and pxflow's split encoder/decoder layout.

Official layout (SAM-H_box, SAM-H_point; one graph per prompt type):
    inputs ``img`` [1, 3, 1024, 1024] float32 and ``prompt`` ([N, 4] boxes, or
    [1, 1, 2]: one point) in the 1024 frame; output low-res mask logits
    [N, 1, 256, 256]. ``inference.yml`` has ``Processor: {type: SAMProcessor,
    size, mean, std}``. Inputs are fed in the order of their sorted names, as
    PaddleX does. A point graph takes one point, so N points cost N full runs.

Split layout (pxflow): one model directory holding ``inference.yml`` (the same
``Processor`` section) and two ordinary model directories:
    ``encoder/``: ``img`` [1, 3, S, S] -> image embedding (any shape);
    ``decoder/``: (image embedding, ``prompt`` [N, 4] or [N, 1, 2]) -> [N, 1, s, s].
The embedding is computed once per image and every prompt of that image (up
to ``max_prompts_per_call`` per decoder call) reuses it, which is what makes
many prompts cheap: the ViT encoder is nearly all of SAM's cost.

Pre- and postprocessing follow SAM: RGB, long side to ``size``, normalise with
SAM's pixel mean/std, zero-pad to ``size x size``; logits are upsampled
bilinearly to ``size``, the padding is cropped, the rest resized to the
original image and thresholded ``> 0``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

import cv2
import numpy as np
import yaml

from ..models import create_backend, load_model_spec, resolve_model_dir
from ..models.model_dir import CONFIG_NAMES, ModelDirError
from ..ops.preprocess import NormalizeImage, Pad, Permute, Preprocessor, ResizeByLong, Sample
from ..settings import PxflowSettings
from .base import ModelIdentity, Predictor, model_source

SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)


def _read_config(model_dir: str) -> dict[str, Any]:
    for name in CONFIG_NAMES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return yaml.safe_load(f) or {}
    raise ModelDirError(f"{model_dir}: no {' or '.join(CONFIG_NAMES)}")


def is_split_dir(model_dir: str) -> bool:
    return os.path.isdir(os.path.join(model_dir, "encoder")) and os.path.isdir(os.path.join(model_dir, "decoder"))


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
        self.model_name = model_name or str((self.config.get("Global") or {}).get("model_name") or os.path.basename(root))
        self.split = is_split_dir(root)
        make = lambda d: create_backend(load_model_spec(d), backend=backend, device=device, threads=cpu_threads)  # noqa: E731
        if self.split:
            self.encoder = make(os.path.join(root, "encoder"))
            self.decoder = make(os.path.join(root, "decoder"))
            self.graphs = [self.encoder, self.decoder]
        else:
            self.whole = make(root)
            self.graphs = [self.whole]
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
        config_name = str((_read_config(root).get("Global") or {}).get("model_name") or os.path.basename(os.path.normpath(root)))
        return ModelIdentity(role, config_name if directory else str(name), digest.hexdigest())

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
        img = sample.img[None]
        parts: list[np.ndarray] = []
        if self.split:
            embedding = self.encoder.run({self.encoder.input_names[0]: img})[0]
            emb_name, prompt_name = sorted(self.decoder.input_names)
            for start in range(0, len(prompts), self.prompts_per_call):
                chunk = self._feed_prompts(prompts[start : start + self.prompts_per_call])
                parts.append(self.decoder.run({emb_name: embedding, prompt_name: chunk})[0])
        else:
            img_name, prompt_name = sorted(self.whole.input_names)
            for start in range(0, len(prompts), self.prompts_per_call):
                chunk = self._feed_prompts(prompts[start : start + self.prompts_per_call])
                parts.append(self.whole.run({img_name: img, prompt_name: chunk})[0])
        return np.concatenate([p.reshape(-1, 1, *p.shape[-2:]) for p in parts])

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

    def segment(self, sample: Sample, prompts: np.ndarray) -> np.ndarray:
        """Boolean masks, one per prompt (original-pixel prompts in, original-frame masks out)."""
        if len(prompts) == 0:
            return np.zeros((0, sample.ori_h, sample.ori_w), dtype=bool)
        return self.postprocess(self.logits(sample, self.to_model_frame(prompts, sample)), sample)
