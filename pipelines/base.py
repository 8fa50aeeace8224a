"""The pipeline base class: the ``predict()`` generator every pipeline shares.

``predict`` expands inputs lazily, loads and preprocesses them ahead of the
model in a thread pool (:func:`pipelines.engine.prefetch_map`), runs batches of
``batch_size`` and yields one result per input, in input order. With
``Pxflow.infer_workers > 1`` that many batches run at once (their
``run_batch`` must then be thread-safe; the default, 1, runs them inline).

A bad input never stops the run: it becomes an :class:`ErrorResult` naming the
input and the reason (``on_error="raise"`` raises instead). When a whole batch
fails inside the model, each image is retried alone so that only the culprit
is reported as ``inference_failed``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from .config import dump_config
from .engine import batched, prefetch_map
from .io.errors import InputError
from .io.inputs import InputItem, iter_inputs
from .models.backends import default_threads
from .results import BaseResult, ErrorResult


@dataclass
class Prepared:
    """A loaded input: the source image and whatever the pipeline's model needs from it."""

    item: InputItem
    index: int
    image: np.ndarray
    payload: Any = None


class BasePipeline(ABC):
    """Subclasses implement :meth:`prepare` (per image, in worker threads) and :meth:`run_batch`."""

    pipeline_name: str = ""

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        self.config = config
        self.device = device or config.get("device") or "cpu"
        px = config.get("Pxflow") or {}
        self.load_workers = int(px.get("load_workers", 2))
        self.prefetch = int(px.get("prefetch", 8))
        # Concurrent single-threaded runs beat one multi-threaded run on small models (BENCHMARKS.md,
        # Detection): no intra-op sync or spinning. Split the cores between them unless told otherwise.
        self.infer_workers = max(1, int(px.get("infer_workers") or 1))
        if self.infer_workers > 1 and px.get("cpu_threads") is None and "Pxflow" in config:
            px["cpu_threads"] = max(1, default_threads() // self.infer_workers)

    # -- subclass hooks ---------------------------------------------------------------
    @property
    @abstractmethod
    def batch_size(self) -> int:
        """How many prepared inputs :meth:`run_batch` takes at once."""

    def prepare(self, image: np.ndarray, **kwargs: Any) -> Any:
        """Per-image work that can run in a loader thread (preprocessing); returns the payload."""
        return None

    @abstractmethod
    def run_batch(self, batch: Sequence[Prepared], **kwargs: Any) -> list[BaseResult]:
        """Infer a batch and build one result per prepared input."""

    def validate_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        """Check per-call options once, before any input is read (bad options fail fast)."""
        return kwargs

    # -- the shared loop ---------------------------------------------------------------
    def predict(self, input: Any, on_error: str = "yield", **kwargs: Any) -> Iterator[BaseResult]:
        """Yield one result per input image, in order. See the module docstring."""
        if on_error not in ("yield", "raise"):
            raise ValueError("on_error must be 'yield' or 'raise'")
        kwargs = self.validate_kwargs(**kwargs)
        counter = iter(range(1 << 62))

        def load(item: InputItem) -> Prepared:
            index = next(counter)
            image = item.load()
            return Prepared(item, index, image, self.prepare(image, **kwargs))

        def run_group(group: list) -> list[BaseResult]:
            ready: list[Prepared] = []
            outcome: dict[int, BaseResult] = {}
            for slot, (item, prepared, error) in enumerate(group):
                if error is not None:
                    outcome[slot] = self._error_result(item, error, slot, on_error)
                else:
                    ready.append(prepared)
            results = iter(self._run_isolating_failures(ready, on_error, **kwargs))
            return [outcome.get(slot) or next(results) for slot in range(len(group))]

        loaded = prefetch_map(load, iter_inputs(input), workers=self.load_workers, window=self.prefetch)
        # infer_workers > 1: batches run concurrently (results still in input order); 1: inline, as before.
        workers = self.infer_workers if self.infer_workers > 1 else 0
        position = 0
        for _, results, error in prefetch_map(run_group, batched(loaded, self.batch_size), workers=workers, window=workers):
            if error is not None:
                raise error
            for result in results:
                result.index = position
                position += 1
                yield result

    __call__ = predict

    def _run_isolating_failures(self, ready: list[Prepared], on_error: str, **kwargs: Any) -> list[BaseResult]:
        if not ready:
            return []
        try:
            return self.run_batch(ready, **kwargs)
        except InputError:
            raise
        except Exception as exc:
            if on_error == "raise" and len(ready) == 1:
                raise
            if len(ready) == 1:
                return [ErrorResult(ready[0].item.uri, "inference_failed", f"{type(exc).__name__}: {exc}")]
            out: list[BaseResult] = []
            for one in ready:
                out.extend(self._run_isolating_failures([one], on_error, **kwargs))
            return out

    @staticmethod
    def _error_result(item: InputItem, error: BaseException, index: int, on_error: str) -> ErrorResult:
        if on_error == "raise":
            raise error
        if isinstance(error, InputError):
            return ErrorResult(item.uri, error.error_type, error.message, index)
        if isinstance(error, TypeError):
            return ErrorResult(item.uri, "unsupported_format", str(error), index)
        return ErrorResult(item.uri, "decode_failed", f"{type(error).__name__}: {error}", index)

    # -- conveniences ------------------------------------------------------------------
    def export_config(self) -> str:
        return dump_config(self.config)
