"""Gallery images -> feature rows, streamed: the first step of building or appending to an index.

Images are read and preprocessed ahead of the model in a thread pool and embedded in
batches as they arrive, so memory stays bounded by the batch, whatever the gallery size.
An image that cannot be read (missing, corrupt, unsupported) is skipped and reported,
never fatal: one bad file must not cost a whole index build.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from ..prefetch import prefetch_map
from ..io.errors import InputError
from ..io.inputs import InputItem, iter_inputs
from ..retrieval import load_gallery
from ..predictors.image_feature import FeaturePredictor

log = logging.getLogger(__name__)

GALLERY_BATCH = 8  # feature batch for gallery embedding (the vectors do not depend on it)


def gallery_items(gallery_imgs: Any, gallery_label: "str | Sequence[str]") -> tuple[list[InputItem], list[str]]:
    """PaddleX's two forms: (root dir, label file) or (images, labels)."""
    if isinstance(gallery_label, str):
        root = gallery_imgs if isinstance(gallery_imgs, str) and gallery_imgs else None
        sources, labels = load_gallery(gallery_label, root)
        return [InputItem(uri) for uri in sources], labels
    images = [gallery_imgs] if isinstance(gallery_imgs, np.ndarray) and gallery_imgs.ndim == 3 else list(gallery_imgs)
    items = list(iter_inputs(images))
    labels = [str(v) for v in gallery_label]
    if len(items) != len(labels):
        raise ValueError(f"{len(items)} gallery images but {len(labels)} labels")
    return items, labels


def embed_gallery(
    model: FeaturePredictor,
    gallery_imgs: Any,
    gallery_label: "str | Sequence[str]",
    workers: int = 2,
    prefetch: int = 8,
) -> tuple[np.ndarray, list[str], list[dict[str, str]]]:
    """``(features [n, D], labels, skipped)``; ``skipped`` lists ``{input_path, error_type, message}``."""
    items, labels = gallery_items(gallery_imgs, gallery_label)

    def load(pair: tuple[InputItem, str]) -> np.ndarray:
        return model.preprocess(pair[0].load())

    batch = max(GALLERY_BATCH, model.batch_size)
    pending: list[np.ndarray] = []
    chunks: list[np.ndarray] = []
    kept: list[str] = []
    skipped: list[dict[str, str]] = []
    for (item, label), tensor, error in prefetch_map(load, zip(items, labels), workers, prefetch):
        if error is None:
            pending.append(tensor)
            kept.append(label)
            if len(pending) >= batch:
                chunks.append(model.infer(pending, batch_size=batch))
                pending = []
            continue
        kind = error.error_type if isinstance(error, InputError) else "decode_failed"
        message = error.message if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
        skipped.append({"input_path": item.uri or "<array>", "error_type": kind, "message": message})
        log.warning("gallery image skipped: %s: %s: %s", item.uri, kind, message)
    if pending:
        chunks.append(model.infer(pending, batch_size=batch))
    if not chunks:
        raise ValueError(f"no readable gallery images ({len(skipped)} skipped)")
    return np.concatenate(chunks), kept, skipped
