"""Inference backends behind one small interface: named inputs in, outputs by position out.

Backends know nothing about tasks (detection, SAM, features); pipelines feed the
inputs a model declares (``image``, ``im_shape``, ``scale_factor`` ...) and read
outputs by position, because exported output names are generic.

``auto`` picks ONNX Runtime when the directory has an ONNX graph and the device
is the CPU (measured ~2x faster than Paddle Inference on the shared PicoDet-XS,
see BENCHMARKS.md), the same choice PaddleX's high-performance mode makes;
otherwise Paddle Inference.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from typing import Mapping, Sequence

import numpy as np

from .model_dir import ModelSpec

BACKENDS = ("auto", "paddle", "onnxruntime")


def default_threads() -> int:
    """CPU threads per predictor: ``PXFLOW_CPU_THREADS`` or the cores this process may use."""
    env = os.environ.get("PXFLOW_CPU_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def parse_device(device: str | None) -> tuple[str, int]:
    """``"cpu"``, ``"gpu"``, ``"gpu:1"`` -> (kind, index); PaddleX spells devices the same way."""
    text = (device or "cpu").strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "gpu"):
        raise ValueError(f"unsupported device {device!r}; use cpu, gpu or gpu:N")
    return kind, int(index or 0)


class Backend(ABC):
    """A loaded model that maps named input arrays to a list of output arrays."""

    name: str
    input_names: list[str]
    #: largest batch the graph accepts (None: any); ONNX exports often fix dim 0 of some inputs to 1.
    max_batch: int | None = None

    @abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch. Inputs the model does not declare are ignored."""


class PaddleBackend(Backend):
    """Paddle Inference; oneDNN on CPU.

    A predictor is not thread-safe, so each concurrent call takes an idle one
    from a pool, cloned on demand (``Predictor.clone`` shares the weights).
    """

    name = "paddle"

    def __init__(self, spec: ModelSpec, device: str = "cpu", threads: int | None = None) -> None:
        import paddle.inference as pi

        if not spec.paddle_files:
            raise ValueError(f"{spec.model_dir}: no Paddle graph for the paddle backend")
        graph, params = spec.paddle_files
        config = pi.Config(graph, params)
        kind, index = parse_device(device)
        if kind == "gpu":
            config.enable_use_gpu(512, index)
        else:
            config.disable_gpu()
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(10)
            config.set_cpu_math_library_num_threads(threads or default_threads())
        config.switch_ir_optim(True)
        config.disable_glog_info()
        self._predictor = pi.create_predictor(config)
        self.input_names = list(self._predictor.get_input_names())
        self._output_names = list(self._predictor.get_output_names())
        self._lock = threading.Lock()
        self._idle = [self._predictor]

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            predictor = self._idle.pop() if self._idle else self._predictor.clone()
        try:
            for name in self.input_names:
                if name not in inputs:
                    raise KeyError(f"model input {name!r} was not provided (have {sorted(inputs)})")
                array = np.ascontiguousarray(inputs[name])
                handle = predictor.get_input_handle(name)
                handle.reshape(array.shape)
                handle.copy_from_cpu(array)
            predictor.run()
            return [predictor.get_output_handle(n).copy_to_cpu() for n in self._output_names]
        finally:
            with self._lock:
                self._idle.append(predictor)


class OnnxBackend(Backend):
    """ONNX Runtime; ``InferenceSession.run`` is thread-safe, so no lock is needed."""

    name = "onnxruntime"

    def __init__(self, spec: ModelSpec, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        if not spec.onnx_file:
            raise ValueError(f"{spec.model_dir}: no ONNX graph for the onnxruntime backend")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # exporters leave initializers in graph inputs; ORT warns per tensor
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        kind, index = parse_device(device)
        providers: list = ["CPUExecutionProvider"]
        if kind == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("device gpu requested but this onnxruntime has no CUDAExecutionProvider")
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        self._session = ort.InferenceSession(spec.onnx_file, options, providers=providers)
        graph_inputs = self._session.get_inputs()
        self.input_names = [i.name for i in graph_inputs]
        self._types = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in graph_inputs}
        fixed = [i.shape[0] for i in graph_inputs if i.shape and isinstance(i.shape[0], int)]
        self.max_batch = min(fixed) if fixed else None

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        feed = {}
        for name in self.input_names:
            if name not in inputs:
                raise KeyError(f"model input {name!r} was not provided (have {sorted(inputs)})")
            feed[name] = np.ascontiguousarray(inputs[name], dtype=self._types[name])
        return list(self._session.run(None, feed))


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def choose_backend(spec: ModelSpec, backend: str = "auto", device: str = "cpu") -> str:
    """Resolve ``auto`` to a concrete backend the directory can serve."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    available = spec.available_backends
    if backend != "auto":
        if backend not in available:
            raise ValueError(f"{spec.model_dir} has no files for backend {backend!r} (has {available})")
        return backend
    kind, _ = parse_device(device)
    if "onnxruntime" in available and (kind == "cpu" or _ort_has_cuda()):
        return "onnxruntime"
    return available[0]


def _ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def create_backend(
    spec: ModelSpec, backend: str = "auto", device: str = "cpu", threads: int | None = None
) -> Backend:
    """Load ``spec`` on the chosen backend."""
    chosen = choose_backend(spec, backend, device)
    cls = OnnxBackend if chosen == "onnxruntime" else PaddleBackend
    return cls(spec, device=device, threads=threads)


def batch_sizes(total: int, batch_size: int, max_batch: int | None) -> Sequence[int]:
    """Split ``total`` items into batches no larger than the pipeline's and the graph's limits."""
    size = max(1, min(batch_size, max_batch or batch_size))
    return [min(size, total - start) for start in range(0, total, size)]
