"""Model directories, backends and the official-model cache."""

from __future__ import annotations

import http.server
import os
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from pxflow.pipelines.models import create_backend, load_model_spec, resolve_model_dir
from pxflow.pipelines.models.backends import choose_backend
from pxflow.pipelines.models.model_dir import ModelDirError
from pxflow.pipelines.models.source import ModelUnavailableError, official_model_dir
from tests.support.s3_server import free_port
from tests.conftest import LEGACY_MODEL, PICODET_ONNX, PICODET_PADDLE, require_shared


def _feed(batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.standard_normal((batch, 3, 320, 320)).astype(np.float32),
        "scale_factor": np.ones((batch, 2), np.float32),
        "im_shape": np.full((batch, 2), 320, np.float32),
    }


def test_pir_model_with_interpolate_runs_under_onednn(tmp_path):
    """The pinned Paddle must run PIR graphs containing interpolate with oneDNN (3.3.1 fails here)."""
    import paddle
    import paddle.nn.functional as F

    class Upsampler(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 4, 3, padding=1)

        def forward(self, image):
            x = self.conv(image)
            return F.interpolate(x, scale_factor=2, mode="bilinear") + F.interpolate(x, scale_factor=2, mode="nearest")

    paddle.seed(0)
    layer = Upsampler()
    layer.eval()
    spec = [paddle.static.InputSpec([None, 3, 16, 16], "float32", "image")]
    paddle.jit.save(layer, str(tmp_path / "inference"), input_spec=spec)
    (tmp_path / "inference.yml").write_text(yaml.safe_dump({"Global": {"model_name": "Up"}, "Preprocess": []}))
    assert (tmp_path / "inference.json").exists(), "paddle.jit.save should write a PIR .json graph"
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    expected = layer(paddle.to_tensor(x)).numpy()
    backend = create_backend(load_model_spec(str(tmp_path)), backend="paddle")
    (out,) = backend.run({"image": x})
    assert out.shape == (2, 4, 32, 32)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_three_model_formats_load_and_run():
    require_shared()
    for model_dir, backend_name, fmt in [
        (PICODET_PADDLE, "paddle", "pir"),
        (PICODET_ONNX, "onnxruntime", None),
        (LEGACY_MODEL, "paddle", "legacy"),
    ]:
        spec = load_model_spec(str(model_dir))
        assert spec.paddle_format == fmt
        backend = create_backend(spec)
        assert backend.name == backend_name
        boxes, counts = backend.run(_feed())[:2]
        assert boxes.ndim == 2 and boxes.shape[1] == 6 and counts.shape == (1,)


def test_auto_prefers_onnx_on_cpu_and_explicit_backend_must_exist():
    require_shared()
    assert choose_backend(load_model_spec(str(PICODET_ONNX)), "auto", "cpu") == "onnxruntime"
    assert choose_backend(load_model_spec(str(PICODET_PADDLE)), "auto", "cpu") == "paddle"
    with pytest.raises(ValueError, match="no files for backend"):
        choose_backend(load_model_spec(str(PICODET_PADDLE)), "onnxruntime", "cpu")


def test_paddle_batch_of_two_equals_two_singles():
    require_shared()
    backend = create_backend(load_model_spec(str(PICODET_PADDLE)), backend="paddle")
    feed = _feed(2)
    boxes, counts = backend.run(feed)[:2]
    singles = [backend.run({k: v[i : i + 1] for k, v in feed.items()})[0] for i in range(2)]
    assert counts.tolist() == [len(s) for s in singles]
    np.testing.assert_allclose(boxes, np.concatenate(singles), atol=1e-3)


def test_onnx_export_with_fixed_batch_reports_max_batch_one():
    require_shared()
    assert create_backend(load_model_spec(str(PICODET_ONNX))).max_batch == 1


def test_model_dir_errors_are_clear(tmp_path):
    with pytest.raises(ModelDirError, match="not found"):
        load_model_spec(str(tmp_path / "missing"))
    (tmp_path / "inference.yml").write_text("Global: {model_name: X}\n")
    with pytest.raises(ModelDirError, match="no model graph"):
        load_model_spec(str(tmp_path))


# ------------------------------------------------------------------ official-model cache



@pytest.fixture
def model_server(tmp_path):
    """A loopback HTTP server publishing PicoDet-XS as an official `<name>_infer.tar`."""
    require_shared()
    root = tmp_path / "www"
    root.mkdir()
    with tarfile.open(root / "PicoDet-XS_infer.tar", "w") as tar:
        for f in PICODET_ONNX.iterdir():
            tar.add(f, arcname=f"PicoDet-XS_infer/{f.name}")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_official_name_downloads_once_into_paddlex_cache(tmp_path, monkeypatch, model_server):
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PXFLOW_MODEL_BASE_URL", model_server)
    path = resolve_model_dir("PicoDet-XS")
    assert Path(path) == tmp_path / "cache" / "official_models" / "PicoDet-XS"
    assert (Path(path) / "inference.onnx").stat().st_size == (PICODET_ONNX / "inference.onnx").stat().st_size
    assert not [p for p in (tmp_path / "cache" / "official_models").iterdir() if p.name.startswith(".tmp")]
    # second resolution works offline: nothing is fetched again
    monkeypatch.setenv("PXFLOW_MODEL_BASE_URL", f"http://127.0.0.1:{free_port()}")
    assert resolve_model_dir("PicoDet-XS") == path


def test_prestaged_model_is_used_without_network(tmp_path, monkeypatch):
    require_shared()
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PXFLOW_MODEL_BASE_URL", f"http://127.0.0.1:{free_port()}")
    shutil.copytree(PICODET_ONNX, official_model_dir("PicoDet-XS"))
    assert resolve_model_dir("PicoDet-XS") == official_model_dir("PicoDet-XS")


def test_offline_unknown_model_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PXFLOW_MODEL_BASE_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ModelUnavailableError, match="could not be downloaded") as info:
        resolve_model_dir("PicoDet-S")
    assert "model_dir" in str(info.value)
    assert not os.path.exists(official_model_dir("PicoDet-S"))


def test_model_checksum_reads_each_file_once_until_it_changes(tmp_path, monkeypatch):
    import builtins
    import hashlib
    import shutil

    from pxflow.pipelines.models import model_dir as model_dir_module

    require_shared()
    d = tmp_path / "picodet"
    shutil.copytree(PICODET_ONNX, d)
    opened: list[str] = []

    def counting_open(path, *args, **kwargs):
        opened.append(os.path.basename(str(path)))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(model_dir_module, "open", counting_open, raising=False)
    spec = model_dir_module.load_model_spec(str(d))
    graph = d / "inference.onnx"
    expected = hashlib.sha256(b"inference.onnx" + graph.read_bytes()).hexdigest()
    assert spec.sha256() == expected
    assert model_dir_module.load_model_spec(str(d)).sha256() == expected  # a second spec of the same dir, as a shard makes
    assert opened.count("inference.onnx") == 1
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF  # same size, new content: the stat key (mtime) changes
    graph.write_bytes(bytes(data))
    os.utime(graph, ns=(graph.stat().st_atime_ns, graph.stat().st_mtime_ns + 1_000_000))
    assert spec.sha256() == hashlib.sha256(b"inference.onnx" + bytes(data)).hexdigest() != expected
    assert opened.count("inference.onnx") == 2
