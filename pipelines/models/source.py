"""Where a model comes from: a local directory, a prefix in any store (``s3://``, a plug-in's), or an official model name.

Official names resolve into PaddleX's own cache layout,
``$PADDLE_PDX_CACHE_HOME/official_models/<name>/`` (default ``~/.paddlex``), so
models PaddleX already downloaded are reused and an air-gapped cluster can
pre-stage them. A missing model is downloaded once from the official
inference-model URL (``PXFLOW_MODEL_BASE_URL`` overrides it, e.g. for a
mirror), extracted into a temporary directory and renamed into place, so a
crash or a concurrent worker never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request

from ..io import storage as _storage_module
from ..io.storage import Storage
from ..io.uri import parse_uri

OFFICIAL_BASE_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_inference_model/paddle3.0.0"
DOWNLOAD_TIMEOUT_S = 60.0


class ModelUnavailableError(RuntimeError):
    """The model is neither cached nor downloadable (offline, unknown name, bad archive)."""


def cache_home() -> str:
    """PaddleX's cache root (``PADDLE_PDX_CACHE_HOME`` or ``~/.paddlex``)."""
    return os.path.abspath(os.path.expanduser(os.environ.get("PADDLE_PDX_CACHE_HOME", "~/.paddlex")))


def official_model_dir(model_name: str) -> str:
    """Where PaddleX keeps (and we look for) the official model ``model_name``."""
    return os.path.join(cache_home(), "official_models", model_name)


def resolve_model_dir(model_name: str | None = None, model_dir: str | None = None, storage: Storage | None = None) -> str:
    """A local directory holding the model: ``model_dir`` wins over ``model_name`` (as in PaddleX).

    A ``model_dir`` in a store (``s3://``, or any scheme a plug-in registered) is staged through
    ``storage`` (default: the AWS environment's); a scheme no store serves is an
    :class:`~pxflow.pipelines.io.stores.UnsupportedSchemeError` naming the supported ones.
    """
    if model_dir:
        parsed = parse_uri(model_dir)
        if parsed.scheme == "file":
            return parsed.path
        return _stage_remote_prefix(model_dir, storage)
    if not model_name:
        raise ValueError("either model_name or model_dir is required")
    target = official_model_dir(model_name)
    if os.path.isdir(target) and os.listdir(target):
        return target
    return _download_official(model_name, target)


def _download_official(model_name: str, target: str) -> str:
    base = os.environ.get("PXFLOW_MODEL_BASE_URL", OFFICIAL_BASE_URL).rstrip("/")
    url = f"{base}/{model_name}_infer.tar"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp-{model_name}-", dir=os.path.dirname(target))
    try:
        archive = os.path.join(staging, "model.tar")
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(archive, "wb") as f:
                shutil.copyfileobj(response, f)
        except (urllib.error.URLError, OSError) as exc:
            raise ModelUnavailableError(
                f"model {model_name!r} is not in {target} and could not be downloaded from {url}: {exc}. "
                "Offline? Copy the model directory there (PaddleX's layout) or pass model_dir."
            ) from None
        extracted = os.path.join(staging, "x")
        try:
            with tarfile.open(archive) as tar:
                _safe_extract(tar, extracted)
        except (tarfile.TarError, OSError) as exc:
            raise ModelUnavailableError(f"{url} is not a valid model archive: {exc}") from None
        entries = os.listdir(extracted)
        root = os.path.join(extracted, entries[0]) if len(entries) == 1 and os.path.isdir(os.path.join(extracted, entries[0])) else extracted
        try:
            os.rename(root, target)
        except OSError:
            if not (os.path.isdir(target) and os.listdir(target)):  # lost a race to another worker: fine
                raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _safe_extract(tar: tarfile.TarFile, target: str) -> None:
    """Extract regular files and folders only, never outside ``target`` (no links, devices, absolute paths).

    Python >= 3.11.4 does this with ``filter="data"``; older 3.11 releases lack the
    filter, so the same rule is applied by hand there.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(target, filter="data")
        return
    root = os.path.realpath(target)
    members = []
    for member in tar.getmembers():
        dest = os.path.realpath(os.path.join(root, member.name))
        if not (member.isfile() or member.isdir()) or os.path.commonpath([root, dest]) != root:
            raise tarfile.TarError(f"refusing archive member {member.name!r}")
        members.append(member)
    tar.extractall(target, members=members)


def _stage_remote_prefix(prefix: str, storage: Storage | None = None) -> str:
    """Copy a model stored under a store's prefix into the local cache once (keyed by the prefix)."""
    store = storage or _storage_module.default_storage()
    key = hashlib.sha256(prefix.rstrip("/").encode()).hexdigest()[:16]
    target = os.path.join(cache_home(), "pxflow_remote_models", key)
    if os.path.isdir(target) and os.listdir(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(target))
    try:
        base = prefix.rstrip("/") + "/"
        found = False
        for info in store.list_objects(prefix):
            rel = info.uri[len(base) :]
            store.download_file(info.uri, os.path.join(staging, rel))
            found = True
        if not found:
            raise ModelUnavailableError(f"no model files under {prefix}")
        try:
            os.rename(staging, target)
        except OSError:
            if not (os.path.isdir(target) and os.listdir(target)):
                raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
