"""Read a PaddleX-style model directory: which graph files it holds and its ``inference.yml``.

Three layouts are recognised, in this order of preference for each backend:
Paddle 3 PIR (``inference.json`` + ``inference.pdiparams``), legacy Paddle
(``inference.pdmodel``/``model.pdmodel`` + ``.pdiparams``) and ONNX
(``inference.onnx``/``model.onnx``). The config is ``inference.yml`` (PaddleX)
or ``infer_cfg.yml`` (PaddleDetection exports).
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

CONFIG_NAMES = ("inference.yml", "infer_cfg.yml", "inference.yaml")
PADDLE_PIR = (("inference.json", "inference.pdiparams"), ("model.json", "model.pdiparams"))
PADDLE_LEGACY = (("inference.pdmodel", "inference.pdiparams"), ("model.pdmodel", "model.pdiparams"))
ONNX_NAMES = ("inference.onnx", "model.onnx")


class ModelDirError(ValueError):
    """A model directory that lacks a loadable graph or config; the message names the file and the reason.

    Raised when a pipeline is created (its models load then), never once per image.
    """


def _read_config(path: str) -> dict[str, Any]:
    """The model's YAML, parsed once per process while its stat is unchanged (a run inspects a model
    directory when it prepares the job and again when it loads the model); a copy, so callers may edit it."""
    key = (path, *_stat_key(path))
    cached = _CONFIG_CACHE.get(key)
    if cached is None:
        cached = _CONFIG_CACHE[key] = _parse_config(path)
    return copy.deepcopy(cached)


#: parsed model YAMLs by (path, size, mtime, inode)
_CONFIG_CACHE: dict[tuple, dict[str, Any]] = {}


def _parse_config(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ModelDirError(f"{path}: invalid YAML ({reason})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ModelDirError(f"{path}: expected a YAML mapping (Global, Preprocess, label_list ...), got {type(config).__name__}")
    return config


@dataclass
class ModelSpec:
    """Everything pipelines need to know about one model directory."""

    model_dir: str
    config: dict[str, Any]
    paddle_files: tuple[str, str] | None = None  # (graph, params)
    paddle_format: str | None = None  # "pir" or "legacy"
    onnx_file: str | None = None
    extra_files: dict[str, str] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        glob = self.config.get("Global") or {}
        return str(glob.get("model_name") or os.path.basename(os.path.normpath(self.model_dir)))

    @property
    def label_list(self) -> list[str]:
        return [str(x) for x in (self.config.get("label_list") or [])]

    @property
    def preprocess(self) -> list[dict[str, Any]]:
        return list(self.config.get("Preprocess") or [])

    @property
    def draw_threshold(self) -> float:
        return float(self.config.get("draw_threshold", 0.5))

    @property
    def available_backends(self) -> list[str]:
        out = []
        if self.paddle_files:
            out.append("paddle")
        if self.onnx_file:
            out.append("onnxruntime")
        return out

    def sha256(self) -> str:
        """Checksum of the graph and weight files, the model part of a run key.

        Cached per process by each file's (path, size, mtime, inode): a run asks for it from
        preflight, planning and every shard, and weights run to hundreds of MB, so each file is
        read once; a file rewritten in place changes its stat and is read again.
        """
        files = tuple(sorted(f for f in (*(self.paddle_files or ()), self.onnx_file) if f))
        key = tuple((path, *_stat_key(path)) for path in files)
        cached = _SHA256_CACHE.get(key)
        if cached is None:
            digest = hashlib.sha256()
            for path in files:
                digest.update(os.path.basename(path).encode())
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        digest.update(chunk)
            cached = _SHA256_CACHE[key] = digest.hexdigest()
        return cached


#: ModelSpec.sha256 results by the files' stat keys (a few entries per process: one per model)
_SHA256_CACHE: dict[tuple, str] = {}


def _stat_key(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def _first_pair(model_dir: str, pairs) -> tuple[str, str] | None:
    for graph, params in pairs:
        g, p = os.path.join(model_dir, graph), os.path.join(model_dir, params)
        if os.path.isfile(g) and os.path.isfile(p):
            return g, p
    return None


def load_model_spec(model_dir: str) -> ModelSpec:
    """Inspect a local model directory; raises :class:`ModelDirError` with what is missing."""
    model_dir = os.path.abspath(os.path.expanduser(model_dir))
    if not os.path.isdir(model_dir):
        raise ModelDirError(f"model directory not found: {model_dir}")
    config: dict[str, Any] | None = None
    for name in CONFIG_NAMES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            config = _read_config(path)
            break
    if config is None:
        raise ModelDirError(f"{model_dir}: no {' or '.join(CONFIG_NAMES)}")
    pir = _first_pair(model_dir, PADDLE_PIR)
    legacy = None if pir else _first_pair(model_dir, PADDLE_LEGACY)
    onnx = next((os.path.join(model_dir, n) for n in ONNX_NAMES if os.path.isfile(os.path.join(model_dir, n))), None)
    for path in (*(pir or legacy or ()), *((onnx,) if onnx else ())):
        if os.path.getsize(path) == 0:
            raise ModelDirError(f"{path}: empty file (0 bytes)")
    if not (pir or legacy or onnx):
        raise ModelDirError(
            f"{model_dir}: no model graph (expected inference.json+inference.pdiparams, "
            "model.pdmodel+model.pdiparams or inference.onnx)"
        )
    return ModelSpec(
        model_dir=model_dir,
        config=config,
        paddle_files=pir or legacy,
        paddle_format="pir" if pir else ("legacy" if legacy else None),
        onnx_file=onnx,
    )
