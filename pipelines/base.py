"""The pipeline base class: the ``predict()`` generator every pipeline shares.

``predict`` expands inputs lazily, loads and preprocesses them ahead of the
model in a thread pool (:func:`pxflow.pipelines.prefetch.prefetch_map`), runs batches of
``batch_size`` and yields one result per input, in input order. With
``Pxflow.infer_workers > 1`` that many batches run at once (their
``run_batch`` must then be thread-safe; the default, 1, runs them inline).

A bad input never stops the run: it becomes an :class:`ErrorResult` naming the
input and the reason (``on_error="raise"`` raises instead). When a whole batch
fails inside the model, each image is retried alone so that only the culprit
is reported as ``inference_failed``.

Memory: besides the ``prefetch`` window, the decoded pixels in flight (loaded,
waiting, being inferred, not yet yielded) across every ``predict()`` call of the
process are bounded by ``PXFLOW_MAX_PIXELS_IN_FLIGHT`` (default 200 M pixels,
about 600 MB of BGR; ``0``: no bound). Each input reserves its width x height from
its header before it is decoded and gives it back once its result is yielded;
see :mod:`pxflow.pipelines.prefetch` for when the bound may be exceeded (an
image larger than it runs alone rather than never). ``admitted=True`` says the
caller already holds its arrays' pixels in that budget (``pxflow serve``): they are
not counted a second time, which could otherwise wait for the caller's own pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from .io.errors import InputError, classify_load_error
from .io.inputs import InputItem, iter_inputs
from .models.backends import default_threads, normalize_device
from .predictors.base import PipelineIdentity, submodule
from .predictors.registry import create_predictor, section_identity
from .io.images import on_header
from .prefetch import BudgetClosed, Reservation, batched, max_pixels_in_flight, pixel_budget, prefetch_map
from .results import BaseResult, ErrorResult
from .settings import PxflowSettings


@dataclass
class Prepared:
    """A loaded input: the source image and whatever the pipeline's model needs from it."""

    item: InputItem
    index: int
    image: np.ndarray
    payload: Any = None


class BasePipeline(ABC):
    """Subclasses implement :meth:`prepare` (per image, in worker threads) and :meth:`run_batch`.

    Class attributes describe the pipeline to the rest of pxflow without loading it:
    :attr:`result_class` (what ``predict()`` yields; it owns the table records),
    :attr:`submodules` (its ``SubModules`` keys and their default predictor types) and
    :attr:`primary_submodule` (what ``--model-dir`` overrides).
    """

    pipeline_name: str = ""
    #: the result class ``predict()`` yields for a good input
    result_class: type[BaseResult] = BaseResult
    #: ``SubModules`` key -> the PaddleX ``module_name`` used when the section names none
    submodules: dict[str, str] = {}
    #: the ``SubModules`` key a bare ``model_dir`` override means (None: ambiguous, name one)
    primary_submodule: str | None = None

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        self.config = config
        self.device = device or config.get("device") or "cpu"
        settings = PxflowSettings.from_mapping(config.get("Pxflow"))
        # Concurrent single-threaded runs beat one multi-threaded run on small models (BENCHMARKS.md,
        # Detection): no intra-op sync or spinning. Split the cores between them unless told otherwise.
        if settings.infer_workers > 1 and settings.cpu_threads is None:
            settings = settings.replace(cpu_threads=max(1, default_threads() // settings.infer_workers))
        self.settings = settings
        self.load_workers = settings.load_workers
        self.prefetch = settings.prefetch
        self.infer_workers = settings.infer_workers

    # -- what the pipeline is, without loading it --------------------------------------------
    @classmethod
    def identity(cls, config: dict[str, Any], options: dict[str, Any] | None = None) -> PipelineIdentity:
        """Every model this config will use with these ``predict`` options, by checksum; nothing is loaded.

        The default covers each of :attr:`submodules` present in the config; pipelines
        whose models depend on the options (SAM's prompt type) or that chain another
        pipeline override it.
        """
        subs = config.get("SubModules") or {}
        return PipelineIdentity(
            tuple(section_identity(subs[role], role, module) for role, module in cls.submodules.items() if subs.get(role))
        )

    @classmethod
    def model_dir_target(cls, config: dict[str, Any], options: dict[str, Any] | None = None) -> str:
        """The ``SubModules`` key a bare ``model_dir`` override applies to."""
        if cls.primary_submodule is None:
            raise ValueError(
                f"{cls.pipeline_name} has several models ({sorted(cls.submodules)}): "
                "set SubModules.<name>.model_dir in the config instead of a bare model_dir"
            )
        return cls.primary_submodule

    # -- subclass hooks ---------------------------------------------------------------
    @property
    @abstractmethod
    def batch_size(self) -> int:
        """How many prepared inputs :meth:`run_batch` takes at once."""

    def prepare(self, image: np.ndarray, item: InputItem, **kwargs: Any) -> Any:
        """Per-image work that can run in a loader thread (preprocessing); returns the payload.

        ``item.options`` holds per-input options (a manifest column such as a SAM prompt).
        """
        return None

    @abstractmethod
    def run_batch(self, batch: Sequence[Prepared], **kwargs: Any) -> list[BaseResult]:
        """Infer a batch and build one result per prepared input."""

    def warm_up(self, batch: int) -> None:
        """Run ``batch`` blank images through the models once, so their runtime arenas reach their batched size.

        ``pxflow serve`` calls it before ``/ready`` answers and before it measures the memory
        baseline. Pipelines whose ``predict()`` needs more than an image (prompts, an index)
        override it.
        """
        list(self.predict([np.full((64, 64, 3), 127, np.uint8)] * max(1, int(batch))))

    def validate_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        """Check per-call options once, before any input is read (bad options fail fast).

        The keywords and their types are the spec's options model's (:meth:`check_predict_options`
        applied it already); this hook does what needs the loaded pipeline (ranges, an index
        against the model, prompts) and returns the options :meth:`run_batch` receives.
        """
        return kwargs

    @classmethod
    def options_model(cls) -> Any:
        """The pydantic model of ``predict()``'s options: the registered spec's (None: no options)."""
        from .registry import predict_options_model

        return predict_options_model(cls.pipeline_name)

    def check_predict_options(self, **kwargs: Any) -> dict[str, Any]:
        """:meth:`validate_kwargs` after checking the call against the spec's options model.

        A misspelt keyword (``thresold=0.5``) raises ``TypeError`` naming it instead of running
        as if it were not given, and a value of the wrong type is a ``ValueError`` naming the
        option (:func:`pxflow.pipelines.options.check_options`); ``device`` is chosen at
        ``create_pipeline`` (the models are loaded there), so a per-call ``device`` is accepted
        only when it names that device.
        """
        from .options import check_options

        device = kwargs.pop("device", None)
        if device is not None and normalize_device(device) != normalize_device(self.device):
            raise ValueError(
                f"predict(device={device!r}): this pipeline was created on {self.device!r}; "
                f"create it with create_pipeline(..., device={device!r}) to run there"
            )
        return self.validate_kwargs(**check_options(self.options_model(), type(self).__name__, kwargs))

    # -- the shared loop ---------------------------------------------------------------
    def predict(
        self, input: Any, on_error: str = "yield", storage: Any = None, *, admitted: bool = False, **kwargs: Any
    ) -> Iterator[BaseResult]:
        """Yield one result per input image, in order. See the module docstring.

        ``storage`` (a :class:`pxflow.pipelines.io.storage.Storage`) reads the inputs; None
        uses the one configured from the environment. ``admitted``: the arrays given are
        already counted in the pixel budget by the caller (:func:`pxflow.pipelines.prefetch.admit`).
        """
        if on_error not in ("yield", "raise"):
            raise ValueError("on_error must be 'yield' or 'raise'")
        kwargs = self.check_predict_options(**kwargs)
        counter = iter(range(1 << 62))
        session = pixel_budget().session(max_pixels_in_flight() or 0)

        def load(entry: tuple[InputItem, Reservation]) -> Prepared:
            item, reservation = entry
            index = next(counter)
            try:
                if session.closed:
                    raise BudgetClosed("the predict() call ended before this input was read")
                # the reservation is taken from the header, before any pixel is decoded
                with on_header(lambda header: reservation.acquire(header.width * header.height)):
                    image = item.load()
                # arrays and PDF pages: once loaded (arrays the caller admitted are counted already)
                reservation.acquire(0 if admitted and item.array is not None else image.shape[0] * image.shape[1])
                return Prepared(item, index, image, self.prepare(image, item, **kwargs))
            except BaseException:
                reservation.release()
                raise

        def run_group(group: list) -> list[BaseResult]:
            ready: list[Prepared] = []
            outcome: dict[int, BaseResult] = {}
            for slot, ((item, _), prepared, error) in enumerate(group):
                if error is not None:
                    outcome[slot] = self._error_result(item, error, slot, on_error)
                else:
                    ready.append(prepared)
            results = iter(self._run_isolating_failures(ready, on_error, **kwargs))
            out = [outcome.get(slot) or next(results) for slot in range(len(group))]
            for ((item, _), _, _), result in zip(group, out):
                if item.page_index is not None:  # a PDF page: the result says which
                    result.data["page_index"] = item.page_index
            return out

        entries = ((item, session.reserve()) for item in iter_inputs(input, storage))
        loaded = prefetch_map(
            load, entries, workers=self.load_workers, window=self.prefetch, on_wait=lambda entry: entry[1].mark_urgent()
        )
        # infer_workers > 1: batches run concurrently (results still in input order); 1: inline, as before.
        workers = self.infer_workers if self.infer_workers > 1 else 0
        runs = prefetch_map(run_group, batched(loaded, self.batch_size), workers=workers, window=workers)
        position = 0
        try:
            for group, results, error in runs:
                if error is not None:
                    raise error
                for ((_, reservation), _, _), result in zip(group, results):
                    result.index = position
                    position += 1
                    session.set_suspended(True)
                    yield result
                    session.set_suspended(False)
                    reservation.release()  # this input's pixels are the caller's now
        finally:
            session.close()  # first: wakes loads waiting for pixels, so the pools below can shut down
            runs.close()
            loaded.close()

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
        return ErrorResult(item.uri, *classify_load_error(error), index)


class SinglePredictorPipeline(BasePipeline):
    """A pipeline around one predictor, its :attr:`primary_submodule` (detection, instance segmentation, a classifier).

    Composition, not a sibling's inheritance: the predictor is built from the registry
    (``module_name`` of the section, else :attr:`default_module`), preprocesses in the
    loader threads and sets the batch size. Subclasses write :meth:`run_batch`.
    """

    #: the PaddleX ``module_name`` used when the primary section names none
    default_module: str = ""

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        super().__init__(config, device)
        section = submodule(config, self.primary_submodule)
        self.model = create_predictor(section, self.settings, self.device, self.default_module)

    @property
    def batch_size(self) -> int:
        return self.model.batch_size

    def prepare(self, image: np.ndarray, item: InputItem, **kwargs: Any) -> Any:
        return self.model.preprocess(image)
