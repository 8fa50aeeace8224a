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

from ..plugins import load_plugins
from .model_dir import ModelDirError, ModelSpec


def default_threads() -> int:
    """CPU threads per predictor: ``PXFLOW_CPU_THREADS`` or the cores this process may use."""
    env = os.environ.get("PXFLOW_CPU_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


#: device kinds PaddleX knows that pxflow cannot run on (no Paddle/ONNX Runtime build for them here)
UNSUPPORTED_DEVICE_KINDS = ("npu", "xpu", "mlu", "dcu", "gcu", "iluvatar_gpu")


def parse_device(device: str | None) -> tuple[str, int]:
    """A PaddleX device string -> ``(kind, index)``: ``"cpu"``, ``"gpu"`` (GPU 0), ``"gpu:N"``.

    ``None``/``""`` mean ``cpu``. ``"gpu:1,2"`` (PaddleX's multi-device list) is accepted,
    but a pxflow predictor runs on one device: the *first* listed GPU is used and a
    ``UserWarning`` says so, as PaddleX's own single predictors do (run one pipeline per GPU,
    e.g. one Prefect worker each, to use several). ``npu``, ``xpu``, ``mlu``, ``dcu`` (with or
    without ``:N``) are rejected: pxflow supports the CPU and NVIDIA GPUs only. Anything else
    is a ``ValueError`` naming the device.
    """
    kinds, ids = _split_device(device)
    if len(ids) > 1:
        import warnings

        warnings.warn(
            f"device {device!r} lists {len(ids)} GPUs; a pxflow pipeline runs on one device, so gpu:{ids[0]} is used "
            "(run one pipeline per GPU to use several)",
            UserWarning,
            stacklevel=2,
        )
    return kinds, ids[0]


def normalize_device(device: str | None) -> str:
    """The canonical spelling of a device (``"cpu"`` or ``"gpu:N"``); raises like :func:`parse_device`."""
    kind, index = parse_device(device)
    return "cpu" if kind == "cpu" else f"gpu:{index}"


def _split_device(device: str | None) -> tuple[str, list[int]]:
    if device is not None and not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'cpu' or 'gpu:0', got {device!r}")
    text = (device or "cpu").strip().lower()
    kind, sep, rest = text.partition(":")
    kind = kind.strip()
    if kind in UNSUPPORTED_DEVICE_KINDS:
        raise ValueError(
            f"unsupported device {device!r}: pxflow supports cpu and NVIDIA GPUs only (cpu, gpu, gpu:N); "
            f"{kind} devices need PaddleX itself"
        )
    if kind == "cpu":
        if sep and rest.strip() not in ("", "0"):
            raise ValueError(f"invalid device {device!r}: the CPU takes no device id; use 'cpu'")
        return "cpu", [0]
    if kind != "gpu":
        raise ValueError(f"invalid device {device!r}; use cpu, gpu, gpu:N or gpu:N,M (the first is used)")
    if not sep or not rest.strip():
        if sep:
            raise ValueError(f"invalid device {device!r}: no GPU id after ':'; use gpu or gpu:N")
        return "gpu", [0]
    ids: list[int] = []
    for part in rest.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ValueError(f"invalid device {device!r}: GPU ids must be non-negative integers, e.g. gpu:0 or gpu:1,2")
        ids.append(int(part))
    return "gpu", ids


class DeviceUnavailableError(ValueError):
    """A requested GPU cannot be used by this install: never a silent CPU run instead."""


def paddle_gpu_problem(index: int = 0) -> str | None:
    """Why Paddle Inference cannot run on ``gpu:index`` here (None: it can)."""
    try:
        import paddle
    except ImportError:  # pragma: no cover - paddle is a dependency
        return "paddle is not installed"
    if not paddle.device.is_compiled_with_cuda():
        return (f"paddlepaddle {paddle.__version__} is a CPU-only build (install paddlepaddle-gpu from "
                "Paddle's own index, see docs/deploy.md)")
    count = paddle.device.cuda.device_count()
    if count == 0:
        return "paddle sees no CUDA device (no driver, or CUDA_VISIBLE_DEVICES hides them)"
    if index >= count:
        return f"paddle sees {count} CUDA device(s), so gpu:{index} does not exist"
    return None


def onnxruntime_gpu_problem(index: int = 0) -> str | None:
    """Why ONNX Runtime cannot run on ``gpu:index`` here (None: it can, as far as ORT can tell before loading)."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover
        return "onnxruntime is not installed"
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {', '.join(providers)}; "
                "install pxflow[gpu], i.e. onnxruntime-gpu, and uninstall onnxruntime)")
    return None


#: backend name -> its GPU check; a backend without an entry has no GPU support
GPU_CHECKS = {"paddle": paddle_gpu_problem, "onnxruntime": onnxruntime_gpu_problem}


def gpu_problems(index: int = 0, backends: Sequence[str] | None = None) -> dict[str, str]:
    """backend -> why it cannot use ``gpu:index`` (only the backends that cannot)."""
    names = list(backends) if backends else list(GPU_CHECKS)
    out = {}
    for name in names:
        check = GPU_CHECKS.get(name)
        problem = check(index) if check else f"backend {name!r} has no GPU support"
        if problem:
            out[name] = problem
    return out


def require_device(device: str | None, backend: str | None = None) -> str:
    """The canonical device, after checking that some backend (or ``backend``) can run on it here.

    ``cpu`` always passes. A GPU that no wanted backend can use raises
    :class:`DeviceUnavailableError` naming each backend's reason, so a GPU run never
    quietly becomes a CPU run.
    """
    kind, index = parse_device(device)
    if kind == "cpu":
        return "cpu"
    wanted = [backend] if backend and backend != "auto" else list(GPU_CHECKS)
    problems = gpu_problems(index, wanted)
    if len(problems) == len(wanted):
        reasons = "; ".join(f"{name}: {why}" for name, why in problems.items())
        raise DeviceUnavailableError(f"device {device!r} is not usable here: {reasons}")
    return f"gpu:{index}"


class Backend(ABC):
    """A loaded model that maps named input arrays to a list of output arrays."""

    name: str
    input_names: list[str]
    #: the graph's outputs, in the order ``run`` returns them (callers that need one output by name)
    output_names: list[str]
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
            problem = paddle_gpu_problem(index)
            if problem:  # enable_use_gpu on a CPU-only build logs a warning and runs on the CPU
                raise DeviceUnavailableError(f"device {device!r} is not usable by the paddle backend: {problem}")
            config.enable_use_gpu(512, index)
        else:
            config.disable_gpu()
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(10)
            config.set_cpu_math_library_num_threads(threads or default_threads())
        config.switch_ir_optim(True)
        config.disable_glog_info()
        try:
            self._predictor = pi.create_predictor(config)
        except Exception as exc:  # a corrupt graph or weights file
            raise ModelDirError(f"{graph} / {params}: Paddle Inference could not load the model ({_reason(exc)})") from None
        self.input_names = list(self._predictor.get_input_names())
        self._output_names = self.output_names = list(self._predictor.get_output_names())
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
            problem = onnxruntime_gpu_problem(index)
            if problem:
                raise DeviceUnavailableError(f"device {device!r} is not usable by the onnxruntime backend: {problem}")
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(spec.onnx_file, options, providers=providers)
        except Exception as exc:  # not ONNX (random bytes, an HTML error page), or an unsupported opset
            raise ModelDirError(f"{spec.onnx_file}: ONNX Runtime could not load the model ({_reason(exc)})") from None
        graph_inputs = self._session.get_inputs()
        self.input_names = [i.name for i in graph_inputs]
        self.output_names = [o.name for o in self._session.get_outputs()]
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


def _reason(exc: BaseException, limit: int = 500) -> str:
    """A runtime's load error on one line, bounded (Paddle's carry C++ stack traces)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


#: backend name -> class; ``auto`` picks among them. Adding a runtime is adding a Backend class and
#: an entry here (:func:`register_backend`; a plug-in calls it from its ``pxflow.plugins`` entry point,
#: loaded by the CLI before the ``--backend`` choices are read from :func:`backend_names`, and on the
#: first lookup of a name not registered here).
REGISTERED: dict[str, type[Backend]] = {"paddle": PaddleBackend, "onnxruntime": OnnxBackend}


def register_backend(cls: type[Backend]) -> None:
    REGISTERED[cls.name] = cls


def backend_names() -> list[str]:
    """What ``backend=`` accepts: ``auto`` and every registered backend."""
    return ["auto", *REGISTERED]


def choose_backend(spec: ModelSpec, backend: str = "auto", device: str = "cpu") -> str:
    """Resolve ``auto`` to a concrete backend the directory can serve."""
    if backend not in backend_names():
        load_plugins()
    if backend not in backend_names():
        raise ValueError(f"unknown backend {backend!r}; choose from {backend_names()}")
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
    """Load ``spec`` on the chosen backend (a GPU no backend can use is a :class:`DeviceUnavailableError`)."""
    if backend in (None, "auto") and parse_device(device)[0] == "gpu":
        require_device(device, None)  # name every backend's reason, not just the one auto falls back to
    return REGISTERED[choose_backend(spec, backend, device)](spec, device=device, threads=threads)


def batch_sizes(total: int, batch_size: int, max_batch: int | None) -> Sequence[int]:
    """Split ``total`` items into batches no larger than the pipeline's and the graph's limits."""
    size = max(1, min(batch_size, max_batch or batch_size))
    return [min(size, total - start) for start in range(0, total, size)]


#: PaddleX ``hpi_config["backend"]`` values pxflow can honour directly
_HPI_BACKENDS = {"onnxruntime": "onnxruntime", "paddle": "paddle"}


def hpi_substitute(hpi_config: Mapping | None, backend: str | None) -> tuple[str, str]:
    """What pxflow does for PaddleX's ``use_hpip=True`` (high-performance inference plugin).

    There is no such plugin here. The closest thing is the backend choice: ``auto`` already
    prefers ONNX Runtime when the model directory has ``inference.onnx`` (on the CPU, or on
    a GPU with a CUDA-enabled onnxruntime), which is what PaddleX's HPI picks for these
    models. ``hpi_config["backend"]`` is honoured when it names ``onnxruntime`` or ``paddle``;
    every other HPI option (TensorRT, OpenVINO, precision, dynamic shapes ...) is ignored.
    An explicit ``backend`` always wins. Returns ``(backend, message for the warning)``.
    """
    hpi = dict(hpi_config or {})
    wanted = hpi.pop("backend", None)
    if backend and backend != "auto":
        chosen, why = backend, f"backend={backend!r} was given explicitly"
    elif wanted in _HPI_BACKENDS:
        chosen, why = _HPI_BACKENDS[wanted], f"hpi_config backend {wanted!r}"
    else:
        chosen = "auto"
        why = "backend 'auto': ONNX Runtime when the model directory has inference.onnx, else Paddle Inference"
        if wanted is not None:
            why += f" (hpi_config backend {wanted!r} is not available in pxflow)"
    ignored = sorted(hpi)
    message = (
        "pxflow has no PaddleX high-performance inference plugin; instead of it pxflow uses "
        f"{why}" + (f"; ignored hpi_config keys: {ignored}" if ignored else "")
    )
    return chosen, message


def pp_option_overrides(pp_option: object) -> tuple[dict[str, object], str]:
    """Map PaddleX's ``pp_option`` (a ``PaddlePredictorOption``, or a dict of its settings) onto pxflow.

    ``cpu_threads`` -> ``Pxflow.cpu_threads``; ``run_mode`` ``paddle*`` / ``mkldnn*`` -> the
    ``paddle`` backend (oneDNN is always on for it on the CPU); ``device_type`` [+ ``device_id``]
    -> ``device``. Every other setting (TensorRT modes and options, CINN, passes ...) is ignored.
    Returns ``({"cpu_threads"|"backend"|"device": value}, message for the warning)``.
    """
    if isinstance(pp_option, Mapping):
        items = dict(pp_option)
    elif isinstance(getattr(pp_option, "_cfg", None), dict):
        items = dict(pp_option._cfg)  # PaddlePredictorOption keeps what was set in _cfg
    else:
        items = {}
        for key in ("run_mode", "device_type", "device_id", "cpu_threads"):
            try:  # PaddlePredictorOption.__getattr__ raises a bare Exception for unset keys
                items[key] = getattr(pp_option, key)
            except Exception:
                continue
    items = {k: v for k, v in items.items() if v is not None}
    out: dict[str, object] = {}
    used: list[str] = []
    if "cpu_threads" in items:
        out["cpu_threads"] = int(items.pop("cpu_threads"))
        used.append(f"cpu_threads={out['cpu_threads']}")
    run_mode = items.pop("run_mode", None)
    if run_mode is not None:
        if str(run_mode).startswith(("paddle", "mkldnn")):
            out["backend"] = "paddle"
            used.append(f"run_mode={run_mode!r} -> backend 'paddle'")
        else:
            items["run_mode"] = run_mode
    if "device_type" in items:
        kind = str(items.pop("device_type"))
        device_id = items.pop("device_id", None)
        out["device"] = kind if device_id is None or kind == "cpu" else f"{kind}:{device_id}"
        used.append(f"device={out['device']!r}")
    items.pop("device_id", None)
    ignored = sorted(items)
    message = "pp_option: pxflow " + (f"uses {', '.join(used)}" if used else "uses none of its settings")
    if ignored:
        message += f"; ignored (no pxflow equivalent): {ignored}"
    return out, message
