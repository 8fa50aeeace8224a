"""The image-feature predictor (PP-ShiTuV2_rec and other PaddleClas feature exports).

Preprocessing comes from the export's ``PreProcess.transform_ops`` (ResizeImage /
CropImage / NormalizeImage / ToCHWImage, via :mod:`pipelines.ops.preprocess`); the
output is one vector per image, L2-normalised row by row when ``PostProcess`` lists
``NormalizeFeatures`` (as the real export does).

Batches give the same vectors as single images. PaddleX 3.7.2 does not: its
``ImageFeaturePredictor.process`` returns the normalised ``[B, D]`` matrix as one
ndarray, and the generic result splitter only splits *lists*, so every image of a
batch receives the whole batch's matrix instead of its own row (batch 1 hides this:
the matrix then has one row).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from ..io.errors import classify_load_error
from ..models import open_model
from ..models.backends import batch_sizes
from ..ops.preprocess import Preprocessor, from_transform_ops
from ..prefetch import prefetch_map
from ..settings import PxflowSettings
from .base import Predictor

#: the smallest feature batch of a streamed embedding (the vectors do not depend on it)
EMBED_BATCH = 8


class Loadable(Protocol):
    """An input that decodes itself to a BGR image (an ``InputItem``)."""

    uri: str | None

    def load(self) -> np.ndarray: ...


class Embedded(NamedTuple):
    """What :meth:`FeaturePredictor.embed_inputs` made of a stream of inputs."""

    #: ``[len(kept), D]`` feature rows, in input order
    features: np.ndarray
    #: positions (in the input stream) of the inputs that have a row
    kept: list[int]
    #: ``(position, error_type, message)`` of each input that could not be read
    failed: list[tuple[int, str, str]]


def l2_normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Each row divided by its own L2 norm (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


class FeaturePredictor(Predictor):
    """Load once; :meth:`preprocess` per image (any thread), :meth:`infer` per batch."""

    module_names = ("image_feature",)

    def __init__(
        self,
        model_name: str | None = None,
        model_dir: str | None = None,
        device: str = "cpu",
        backend: str = "auto",
        cpu_threads: int | None = None,
        batch_size: int = 1,
    ) -> None:
        loaded = open_model(model_name, model_dir, device, backend, cpu_threads)
        self.spec, self.model_name, self.backend = loaded.spec, loaded.model_name, loaded.backend
        config = self.spec.config
        if "PreProcess" in config:
            ops = from_transform_ops((config.get("PreProcess") or {}).get("transform_ops"))
        else:
            ops = self.spec.preprocess
        self.preprocessor = Preprocessor.from_config(ops)
        post = config.get("PostProcess")
        self.normalize = post is None or (isinstance(post, dict) and "NormalizeFeatures" in post)
        self.input_name = self.backend.input_names[0]
        self.batch_size = max(1, int(batch_size))

    def preprocess(self, image_bgr: np.ndarray) -> np.ndarray:
        return self.preprocessor(image_bgr).img

    def infer(self, inputs: Sequence[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """Feature rows ``[n, D]`` for preprocessed CHW inputs (``batch_size`` overrides the model's)."""
        rows: list[np.ndarray] = []
        start = 0
        for size in batch_sizes(len(inputs), batch_size or self.batch_size, self.backend.max_batch):
            chunk = np.stack(inputs[start : start + size]).astype(np.float32, copy=False)
            start += size
            out = np.asarray(self.backend.run({self.input_name: chunk})[0], dtype=np.float32)
            rows.append(out.reshape(size, -1))
        if not rows:
            return np.zeros((0, 0), np.float32)
        features = np.concatenate(rows)
        return l2_normalize_rows(features) if self.normalize else features

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Feature rows for BGR images."""
        return self.infer([self.preprocess(img) for img in images])

    def embed_inputs(self, inputs: Iterable[Loadable], workers: int = 2, window: int = 8) -> Embedded:
        """Embed a stream of inputs with bounded memory: reads, decodes and preprocessing run ahead of the
        model in ``workers`` threads (at most ``window`` waiting), batches infer as they fill. An input that
        cannot be read is reported in ``failed``, never fatal: one bad gallery file must not cost a build."""
        batch = max(EMBED_BATCH, self.batch_size)
        pending: list[np.ndarray] = []
        chunks: list[np.ndarray] = []
        kept: list[int] = []
        failed: list[tuple[int, str, str]] = []
        positions = ((i, item) for i, item in enumerate(inputs))
        for (i, _), tensor, error in prefetch_map(lambda pair: self.preprocess(pair[1].load()), positions, workers, window):
            if error is not None:
                failed.append((i, *classify_load_error(error)))
                continue
            pending.append(tensor)
            kept.append(i)
            if len(pending) >= batch:
                chunks.append(self.infer(pending, batch_size=batch))
                pending = []
        if pending:
            chunks.append(self.infer(pending, batch_size=batch))
        features = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
        return Embedded(features, kept, failed)

    def describe(self) -> dict[str, Any]:
        """What an index records about the model that made its vectors."""
        return {"name": self.model_name, "sha256": self.spec.sha256()}

    @classmethod
    def from_submodule(cls, sub: Mapping[str, Any], settings: PxflowSettings, device: str) -> "FeaturePredictor":
        """Build from a PaddleX ``SubModules.Recognition`` section and the ``Pxflow`` settings."""
        return cls(
            model_name=sub.get("model_name"),
            model_dir=sub.get("model_dir"),
            device=device,
            backend=settings.backend,
            cpu_threads=settings.cpu_threads,
            batch_size=int(sub.get("batch_size") or 1),
        )
