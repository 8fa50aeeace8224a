"""Preprocessing driven by a model's ``inference.yml`` ``Preprocess`` list, as PaddleX builds it.

Supported ops: ``Resize`` (``interp`` codes 0-4, ``keep_ratio``), ``NormalizeImage``,
``Permute``, ``Pad``, ``PadStride``, ``WarpAffine``, and the PaddleClas-style ops of
classification/feature exports (``ResizeImage``, ``CropImage``, ``ToCHWImage``; see
:func:`from_transform_ops`). Semantics follow PaddleX's
detection predictor (RGB input, ``target_size`` given as ``[h, w]``,
``scale_factor = resized / original`` per axis); the arithmetic is arranged to
be cheaper without changing the result:

- the BGR->RGB swap is deferred until after resizing (resizing is per-channel,
  so the result is identical, and the swap then touches 320x320 pixels instead
  of the full image);
- normalisation is one fused multiply-add (``x * (s/std) - mean/std``).

A batch of samples of different sizes (``keep_ratio``) is zero-padded
bottom-right to a common size, which leaves box coordinates unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import cv2
import numpy as np

INTERP_CODES = {
    0: cv2.INTER_NEAREST,
    1: cv2.INTER_LINEAR,
    2: cv2.INTER_CUBIC,
    3: cv2.INTER_AREA,
    4: cv2.INTER_LANCZOS4,
}
INTERP_NAMES = {"NEAREST": 0, "LINEAR": 1, "BICUBIC": 2, "CUBIC": 2, "AREA": 3, "LANCZOS4": 4}


@dataclass
class Sample:
    """One image on its way to the model, with the geometry the postprocessing needs."""

    img: np.ndarray  # HWC until Permute, CHW after
    ori_h: int
    ori_w: int
    scale_h: float = 1.0
    scale_w: float = 1.0
    channels: str = "BGR"  # current channel order of ``img``
    want: str = "RGB"  # order the model expects (PaddleX reads RGB; WarpAffine models want BGR)
    chw: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_bgr(cls, image: np.ndarray) -> "Sample":
        h, w = image.shape[:2]
        return cls(img=image, ori_h=h, ori_w=w)

    def fix_channels(self) -> None:
        """Apply the deferred colour swap before an op that mixes channels or values."""
        if self.channels != self.want:
            self.img = self.img[:, :, ::-1] if not self.chw else self.img[::-1]
            self.channels = self.want

    @property
    def hw(self) -> tuple[int, int]:
        return (self.img.shape[1], self.img.shape[2]) if self.chw else (self.img.shape[0], self.img.shape[1])


Op = Callable[[Sample], Sample]


def _interp(value: int | str) -> int:
    if isinstance(value, str):
        value = INTERP_NAMES[value.upper()]
    return INTERP_CODES[int(value)]


class _ResizeOp:
    """Shared resize step: subclasses say the output size and interpolation; geometry is recorded once."""

    def output_size(self, h: int, w: int) -> tuple[int, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def interpolation(self, h: int, new_h: int) -> int:
        return self.interp

    def __call__(self, s: Sample) -> Sample:
        h, w = s.hw
        new_h, new_w = self.output_size(h, w)
        if (new_h, new_w) != (h, w):  # OpenCV copies unchanged sizes anyway
            s.img = cv2.resize(s.img, (new_w, new_h), interpolation=self.interpolation(h, new_h))
        s.scale_h, s.scale_w = new_h / s.ori_h, new_w / s.ori_w
        return s


class Resize(_ResizeOp):
    """Resize to ``target_size`` ([h, w]); with ``keep_ratio`` scale to fit as PaddleX does."""

    def __init__(self, target_size: int | Sequence[int], keep_ratio: bool = False, interp: int | str = 1, **_: Any):
        if isinstance(target_size, int):
            target_size = [target_size, target_size]
        self.target_h, self.target_w = int(target_size[0]), int(target_size[1])
        self.keep_ratio = bool(keep_ratio)
        self.interp = _interp(interp)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(h, w) after resizing an ``h x w`` image."""
        if not self.keep_ratio:
            return self.target_h, self.target_w
        tmax, tmin = max(self.target_h, self.target_w), min(self.target_h, self.target_w)
        scale = min(tmax / max(h, w), tmin / min(h, w))
        return round(h * scale), round(w * scale)


class NormalizeImage:
    """``(x * scale - mean) / std`` in float32, as one fused multiply-add per channel."""

    def __init__(
        self,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        is_scale: bool = True,
        norm_type: str | None = "mean_std",
        scale: float | str | None = None,
        **_: Any,
    ):
        # PaddleDetection spells the 1/255 factor ``is_scale``; PaddleClas exports give ``scale``
        # (a number or a string such as "1.0/255.0"); ``order`` (hwc/chw) is implied by Sample.chw.
        scale = parse_scale(scale) if scale is not None else (1.0 / 255.0 if is_scale else 1.0)
        if norm_type and norm_type not in ("mean_std", "none"):
            raise ValueError(f"unsupported norm_type {norm_type!r}")
        if norm_type == "none":
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        std_arr = np.asarray(std, dtype=np.float32)
        self.alpha = (np.float32(scale) / std_arr).astype(np.float32)
        self.beta = (-np.asarray(mean, dtype=np.float32) / std_arr).astype(np.float32)

    def __call__(self, s: Sample) -> Sample:
        s.fix_channels()
        img = s.img.astype(np.float32)
        if s.chw:
            img = img * self.alpha[:, None, None] + self.beta[:, None, None]
        else:
            img *= self.alpha
            img += self.beta
        s.img = img
        return s


class Permute:
    """HWC -> CHW."""

    def __init__(self, **_: Any):
        pass

    def __call__(self, s: Sample) -> Sample:
        s.fix_channels()
        if not s.chw:
            s.img = np.ascontiguousarray(s.img.transpose(2, 0, 1))
            s.chw = True
        return s


class Pad:
    """Pad bottom-right to a fixed ``size`` ([h, w]) with ``fill_value`` (PaddleX default 127.5)."""

    def __init__(self, size: int | Sequence[int] | None = None, fill_value: Sequence[float] | None = None, **_: Any):
        if size is None:
            size = [640, 640]
        if isinstance(size, int):
            size = [size, size]
        self.size = (int(size[-2]), int(size[-1]))
        self.fill = np.asarray(fill_value if fill_value is not None else [127.5, 127.5, 127.5], dtype=np.float32)

    def __call__(self, s: Sample) -> Sample:
        s.fix_channels()
        h, w = s.hw
        th, tw = self.size
        if (h, w) == (th, tw):
            return s
        if s.chw:
            canvas = np.empty((s.img.shape[0], th, tw), np.float32)
            canvas[:] = self.fill[:, None, None]
            canvas[:, :h, :w] = s.img
        else:
            canvas = np.empty((th, tw, s.img.shape[2]), np.float32)
            canvas[:] = self.fill
            canvas[:h, :w] = s.img
        s.img = canvas
        return s


class PadStride:
    """Zero-pad bottom-right so that H and W are multiples of ``stride``."""

    def __init__(self, stride: int = 32, **_: Any):
        self.stride = int(stride)

    def __call__(self, s: Sample) -> Sample:
        if self.stride <= 0:
            return s
        h, w = s.hw
        ph, pw = math.ceil(h / self.stride) * self.stride, math.ceil(w / self.stride) * self.stride
        if (ph, pw) != (h, w):
            s.img = pad_to(s.img, ph, pw, s.chw)
        return s


class WarpAffine:
    """CenterNet-style affine warp (PaddleX feeds these models BGR, so the colour swap is cancelled)."""

    def __init__(self, keep_res: bool = True, pad: int = 31, input_h: int = 512, input_w: int = 512, **_: Any):
        self.keep_res, self.pad = bool(keep_res), int(pad)
        self.input_h, self.input_w = int(input_h), int(input_w)

    def __call__(self, s: Sample) -> Sample:
        s.want = "BGR"
        s.fix_channels()
        h, w = s.img.shape[:2]
        if self.keep_res:
            out_h, out_w = (h | self.pad) + 1, (w | self.pad) + 1
            size = np.array([out_w, out_h], np.float32)
            center = np.array([w // 2, h // 2], np.float32)
        else:
            out_h, out_w = self.input_h, self.input_w
            size = np.array([max(h, w), max(h, w)], np.float32)
            center = np.array([w / 2.0, h / 2.0], np.float32)
        matrix = affine_transform(center, size, (out_w, out_h))
        s.img = cv2.warpAffine(s.img, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR)
        return s


def affine_transform(center: np.ndarray, size: np.ndarray, output: tuple[int, int]) -> np.ndarray:
    """The 2x3 matrix mapping a box of ``size`` around ``center`` onto ``output`` (w, h), no rotation."""
    src_w, dst_w, dst_h = float(size[0]), float(output[0]), float(output[1])
    src_dir = np.array([0.0, -0.5 * src_w], np.float32)
    dst_dir = np.array([0.0, -0.5 * dst_w], np.float32)
    src = np.stack([center, center + src_dir, np.zeros(2, np.float32)]).astype(np.float32)
    dst = np.stack([[dst_w * 0.5, dst_h * 0.5], [dst_w * 0.5, dst_h * 0.5] + dst_dir, np.zeros(2)]).astype(np.float32)
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], np.float32)


def pad_to(img: np.ndarray, h: int, w: int, chw: bool, value: float = 0.0) -> np.ndarray:
    """Pad ``img`` bottom-right to ``h x w``."""
    if chw:
        out = np.full((img.shape[0], h, w), value, dtype=img.dtype)
        out[:, : img.shape[1], : img.shape[2]] = img
    else:
        out = np.full((h, w) + img.shape[2:], value, dtype=img.dtype)
        out[: img.shape[0], : img.shape[1]] = img
    return out


def parse_scale(value: float | str) -> float:
    """A PaddleClas ``scale``: a number or an arithmetic string like ``"1.0/255.0"`` (never eval'd)."""
    if isinstance(value, str):
        num, _, den = value.partition("/")
        return float(num) / float(den) if den else float(num)
    return float(value)


def _paddleclas_size(size: int | Sequence[int]) -> tuple[int, int]:
    """PaddleClas sizes are ``int`` or ``[w, h]``; returns ``(h, w)``."""
    if isinstance(size, int):
        return size, size
    return int(size[1]), int(size[0])


class ResizeImage(_ResizeOp):
    """PaddleClas ``ResizeImage``: to a fixed ``size`` ([w, h]) or short side to ``resize_short``.

    PaddleX's feature/classification predictors always resize bilinearly whatever
    ``interpolation`` says, so that is what happens here too (same vectors as PaddleX).
    """

    def __init__(self, size: int | Sequence[int] | None = None, resize_short: int | None = None, **_: Any):
        if not size and not resize_short:
            raise ValueError("ResizeImage needs size or resize_short")
        self.size = _paddleclas_size(size) if size else None
        self.resize_short = int(resize_short) if resize_short else None

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        scale = self.resize_short / min(h, w)
        return round(h * scale), round(w * scale)

    def interpolation(self, h: int, new_h: int) -> int:
        return cv2.INTER_LINEAR


class CropImage:
    """PaddleClas ``CropImage``: a centred crop of ``size`` ([w, h] or int), as classification exports use."""

    def __init__(self, size: int | Sequence[int] = 224, **_: Any):
        self.h, self.w = _paddleclas_size(size)

    def __call__(self, s: Sample) -> Sample:
        h, w = s.hw
        if h < self.h or w < self.w:
            raise ValueError(f"CropImage: image {w}x{h} is smaller than the crop {self.w}x{self.h}")
        top, left = (h - self.h) // 2, (w - self.w) // 2
        if s.chw:
            s.img = s.img[:, top : top + self.h, left : left + self.w]
        else:
            s.img = s.img[top : top + self.h, left : left + self.w]
        return s


class ResizeByLong(_ResizeOp):
    """Scale so the long side is ``target_long_edge`` (SAM's ``ResizeLongestSide``; sizes ``int(x * s + 0.5)``).

    ``interp="auto"`` shrinks with area averaging and enlarges bilinearly: SAM
    and PaddleX resize with PIL's bilinear filter, which antialiases when it
    shrinks; ``INTER_AREA`` is OpenCV's closest match (plain ``INTER_LINEAR``
    would alias on large photos).
    """

    def __init__(self, target_long_edge: int = 1024, interp: int | str = "auto", **_: Any):
        self.target = int(target_long_edge)
        self.interp = None if str(interp).lower() == "auto" else _interp(interp)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        scale = self.target / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def interpolation(self, h: int, new_h: int) -> int:
        if self.interp is not None:
            return self.interp
        return cv2.INTER_AREA if new_h < h else cv2.INTER_LINEAR


OPS: dict[str, type] = {
    "ResizeByLong": ResizeByLong,
    "Resize": Resize,
    "NormalizeImage": NormalizeImage,
    "Permute": Permute,
    "Pad": Pad,
    "PadStride": PadStride,
    "WarpAffine": WarpAffine,
    # PaddleClas-style exports (image classification / image feature models)
    "ResizeImage": ResizeImage,
    "CropImage": CropImage,
    "ToCHWImage": Permute,
}


def from_transform_ops(transform_ops: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """PaddleClas ``PreProcess.transform_ops`` (``[{Op: {params}}]``) as ``[{type: Op, **params}]``.

    ``DecodeImage`` is dropped (images arrive decoded) and so is ``return_numpy``.
    """
    entries: list[dict[str, Any]] = []
    for item in transform_ops or []:
        (kind, params), = item.items()
        if kind == "DecodeImage":
            continue
        params = {k: v for k, v in (params or {}).items() if k != "return_numpy"}
        entries.append({"type": kind, **params})
    return entries


class Preprocessor:
    """The op chain of one model, plus batching into the named model inputs."""

    def __init__(self, ops: Sequence[Op]):
        self.ops = list(ops)

    @classmethod
    def from_config(cls, preprocess: Sequence[dict[str, Any]]) -> "Preprocessor":
        ops = []
        for entry in preprocess:
            params = dict(entry)
            kind = params.pop("type")
            if kind not in OPS:
                raise ValueError(f"unsupported preprocessing op {kind!r} (supported: {sorted(OPS)})")
            ops.append(OPS[kind](**params))
        if not any(isinstance(op, Permute) for op in ops):
            ops.append(Permute())
        return cls(ops)

    def __call__(self, image_bgr: np.ndarray) -> Sample:
        sample = Sample.from_bgr(image_bgr)
        for op in self.ops:
            sample = op(sample)
        sample.fix_channels()
        if sample.img.dtype != np.float32:
            sample.img = sample.img.astype(np.float32)
        return sample


def to_batch(samples: Sequence[Sample]) -> dict[str, np.ndarray]:
    """Stack samples into ``image`` [B,C,H,W], ``im_shape`` [B,2] (h, w) and ``scale_factor`` [B,2]."""
    h = max(s.img.shape[1] for s in samples)
    w = max(s.img.shape[2] for s in samples)
    images = [s.img if s.img.shape[1:] == (h, w) else pad_to(s.img, h, w, chw=True) for s in samples]
    return {
        "image": np.stack(images).astype(np.float32, copy=False),
        # PaddleX/PaddleDetection: the RESIZED size; Pad/PadStride/WarpAffine do not change im_shape
        # (SOLOv2/MaskRCNN crop their masks with it, so the padded size would misplace them).
        "im_shape": np.array([[round(s.ori_h * s.scale_h), round(s.ori_w * s.scale_w)] for s in samples], dtype=np.float32),
        "scale_factor": np.array([[s.scale_h, s.scale_w] for s in samples], dtype=np.float32),
    }
