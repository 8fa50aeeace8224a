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

from ..io.inputs import InputItem, iter_inputs
from ..retrieval import load_gallery
from ..predictors.image_feature import FeaturePredictor

log = logging.getLogger(__name__)


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
    embedded = model.embed_inputs(items, workers, prefetch)
    skipped = []
    for i, kind, message in embedded.failed:
        skipped.append({"input_path": items[i].uri or "<array>", "error_type": kind, "message": message})
        log.warning("gallery image skipped: %s: %s: %s", items[i].uri, kind, message)
    if not embedded.kept:
        raise ValueError(f"no readable gallery images ({len(skipped)} skipped)")
    return embedded.features, [labels[i] for i in embedded.kept], skipped


def recognition_config(pipeline: str = "PP-ShiTuV2", rec_model_dir: str | None = None,
                       backend: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline config with ``rec_model_dir`` and ``backend`` applied, and its ``SubModules.Recognition``."""
    from ..config import load_config
    from ..overrides import apply_overrides
    from ..predictors import submodule

    config = apply_overrides(
        load_config(pipeline),
        settings={"backend": backend} if backend else None,
        assignments=[f"SubModules.Recognition.model_dir={rec_model_dir}"] if rec_model_dir else (),
    )
    return config, submodule(config, "Recognition")


def recognition_identity(section: dict[str, Any]):
    """The recognition model's name and checksum, resolving (or downloading) it but loading nothing:
    a model that is neither cached nor downloadable raises ``ModelUnavailableError`` here."""
    from ..predictors.registry import section_identity

    return section_identity(section, "Recognition", "image_feature")
