"""One plug-in mechanism (issue 16): a distribution built here adds a store, a runner and a pipeline.

The plug-in is a real distribution: a package written into a temp folder with a
``pyproject.toml`` declaring ONE entry point in the group ``pxflow.plugins``, built into a
wheel and installed by pip into its own ``site`` folder. The stock ``pxflow`` CLI then runs
with that folder on ``PYTHONPATH``, as in an environment where the plug-in was pip-installed:
nothing in pxflow names it.

It adds a ``memory://`` store (objects held in a dict, filled at import from files packed in
the package: a few PNG images and the toy classifier's model), a runner (the thread runner
under another name that leaves a mark when a flow uses it), and a pipeline (the toy classifier
of ``tests/support/toy_classifier``, copied in with its YAML).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.support.annotate_helpers import read_table
from tests.support.cli import run_pxflow, single_error_line
from tests.support.serve_process import Server

PACKAGE = "pxflow_memory_plugin"
TOY = ROOT / "tests" / "support" / "toy_classifier"

PYPROJECT = f"""\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "pxflow-memory-plugin"
version = "0.1.0"
description = "a memory:// store, a runner and a pipeline for pxflow (tests/test_plugins.py)"

[project.entry-points."pxflow.plugins"]
memory = "{PACKAGE}:register"
"""

INIT = '''"""Registers everything this plug-in adds; pxflow runs it from the ``pxflow.plugins`` entry point."""


def register() -> None:
    from pxflow.flows.runners import register_runner
    from pxflow.pipelines.io.stores import register_store
    from pxflow.pipelines.predictors import register_predictor
    from pxflow.pipelines.registry import register_pipeline
    from pxflow.pipelines.spec import Endpoint, PipelineSpec

    from .runner import MarkedThreadRunner
    from .store import MemoryStore

    register_store("memory", MemoryStore)
    register_runner(MarkedThreadRunner())
    register_predictor("image_classification", "pxflow_memory_plugin.predictor:ClassificationPredictor")
    register_pipeline(PipelineSpec(
        name="plugin_classifier",
        pipeline="pxflow_memory_plugin.pipeline:ToyClassifierPipeline",
        config=__file__.rsplit("/", 1)[0] + "/plugin_classifier.yaml",
        options="pxflow_memory_plugin.pipeline:ToyOptions",
        endpoints=(Endpoint("/image-classification", "pxflow_memory_plugin.serving:handle"),),
    ))
'''

STORE = '''"""``memory://bucket/key``: objects in a dict, filled at import from the files under ``data/``."""

import hashlib
from pathlib import Path

from pxflow.pipelines.io.errors import InputError
from pxflow.pipelines.io.stores import Store
from pxflow.pipelines.io.stores.base import ObjectInfo, has_suffix, is_hidden, normalize_suffixes
from pxflow.pipelines.io.uri import ParsedURI

_DATA = Path(__file__).parent / "data"
OBJECTS = {"memory://" + p.relative_to(_DATA).as_posix(): p.read_bytes() for p in sorted(_DATA.rglob("*")) if p.is_file()}


class MemoryStore(Store):
    schemes = ("memory",)

    @classmethod
    def parse(cls, uri):
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        return ParsedURI("memory", bucket, key)

    def _info(self, uri):
        data = OBJECTS[uri]
        return ObjectInfo(uri, len(data), hashlib.md5(data).hexdigest())

    def read_object(self, uri):
        if uri not in OBJECTS:
            raise InputError(uri, "not_found", "no such object in memory")
        return OBJECTS[uri], self._info(uri)

    def stat(self, uri):
        return self._info(uri) if uri in OBJECTS else None

    def is_dir(self, uri):
        return any(k.startswith(uri.rstrip("/") + "/") for k in OBJECTS)

    def list_objects(self, prefix, suffixes=None, page_size=1000):
        if prefix in OBJECTS:
            yield self._info(prefix)
            return
        base, wanted = prefix.rstrip("/") + "/", normalize_suffixes(suffixes)
        for uri in sorted(OBJECTS):
            if uri.startswith(base) and not is_hidden(uri[len(base):]) and has_suffix(uri, wanted):
                yield self._info(uri)
'''

RUNNER = '''"""Runner ``marked``: the thread runner, leaving a line in $PXFLOW_TEST_RUNNER_MARK when a flow uses it."""

import os

from pxflow.flows.runners import ThreadRunner


class MarkedThreadRunner(ThreadRunner):
    name = "marked"
    description = "threads that leave a mark (tests/test_plugins.py)"

    def task_runner(self, concurrency, address=None, device="cpu"):
        with open(os.environ["PXFLOW_TEST_RUNNER_MARK"], "a") as f:
            f.write(f"{self.name} concurrency={concurrency} device={device}\\n")
        return super().task_runner(concurrency, address, device)
'''

IMAGES = {"dark.png": 0, "bright.png": 255, "grey/mid.png": 100}  # name -> pixel value


def _build_wheel(source: Path, out: Path) -> Path:
    """The distribution's wheel (PEP 427), from its ``pyproject.toml`` and package folder.

    Built by hand because this environment has no ``wheel`` package for setuptools and no
    index to fetch one from; pip installs it as it would any wheel.
    """
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    dist = f"{project['name'].replace('-', '_')}-{project['version']}"
    files: dict[str, bytes] = {
        p.relative_to(source).as_posix(): p.read_bytes()
        for p in sorted((source / PACKAGE).rglob("*")) if p.is_file() and "__pycache__" not in p.parts
    }
    entry_points = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
                           for group, eps in project["entry-points"].items())
    files[f"{dist}.dist-info/METADATA"] = f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n".encode()
    files[f"{dist}.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests/test_plugins.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist}.dist-info/entry_points.txt"] = entry_points.encode()
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
              for name, data in files.items()]
    files[f"{dist}.dist-info/RECORD"] = ("\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n").encode()
    wheel = out / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plug-in, written, built and pip-installed into ``<tmp>/site``; that folder."""
    from tests.support.toy_classifier.model import build

    tmp = tmp_path_factory.mktemp("plugin")
    source = tmp / "plugin"
    package = source / PACKAGE
    (package / "data" / "bucket").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text(INIT)
    (package / "store.py").write_text(STORE)
    (package / "runner.py").write_text(RUNNER)
    shutil.copy(TOY / "predictor.py", package / "predictor.py")
    shutil.copy(TOY / "serving.py", package / "serving.py")
    pipeline = (TOY / "pipeline.py").read_text().replace('pipeline_name = "toy_classifier"', 'pipeline_name = "plugin_classifier"')
    assert 'pipeline_name = "plugin_classifier"' in pipeline
    (package / "pipeline.py").write_text(pipeline)
    (package / "plugin_classifier.yaml").write_text(
        (TOY / "toy_classifier.yaml").read_text().replace("pipeline_name: toy_classifier", "pipeline_name: plugin_classifier"))
    for name, value in IMAGES.items():  # the images the memory store serves under memory://bucket/
        ok, png = cv2.imencode(".png", np.full((12 + value % 7, 16, 3), value, np.uint8))
        assert ok
        (package / "data" / "bucket" / name).parent.mkdir(parents=True, exist_ok=True)
        (package / "data" / "bucket" / name).write_bytes(png.tobytes())
    build(str(package / "data" / "models" / "toy"))  # the model too: --model-dir memory://models/toy
    wheel = _build_wheel(source, tmp)
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, text=True, timeout=120)
    assert (site / PACKAGE / "store.py").is_file()
    return site


def test_the_stock_cli_runs_a_plugin_runner_and_pipeline_on_a_plugin_store(plugin_site, tmp_path):
    """``pxflow annotate --runner marked --pipeline <the plug-in's> --input memory://bucket/`` (model in memory too)."""
    out, mark = tmp_path / "out", tmp_path / "runner-mark"
    proc = run_pxflow(tmp_path, "annotate", "--runner", "marked",
                      "--pipeline", "plugin_classifier",
                      "--model-dir", "memory://models/toy", "--input", "memory://bucket/", "--output", str(out),
                      "--no-progress",
                      PYTHONPATH=str(plugin_site), PXFLOW_TEST_RUNNER_MARK=str(mark),
                      PADDLE_PDX_CACHE_HOME=str(tmp_path / "model-cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["image_uri"]: r for r in read_table(str(out / "images")).to_pylist()}
    assert set(rows) == {f"memory://bucket/{name}" for name in IMAGES}
    assert {r["status"] for r in rows.values()} == {"ok"} and {r["pipeline"] for r in rows.values()} == {"plugin_classifier"}
    labels = {r["image_uri"]: r["label"] for r in read_table(str(out / "objects")).to_pylist()}
    assert labels == {"memory://bucket/dark.png": "dark", "memory://bucket/bright.png": "bright",
                      "memory://bucket/grey/mid.png": "dark"}
    assert mark.read_text().splitlines() == ["marked concurrency=2 device=cpu"]  # the plug-in runner ran the shards



def test_the_stock_server_serves_a_plugin_pipeline_from_its_spec(plugin_site, tmp_path):
    """``pxflow serve --pipeline plugin_classifier``: the route comes from the plug-in's spec, the model from memory://."""
    server = Server(["--pipeline", "plugin_classifier", "--model-dir", "memory://models/toy"], tmp_path,
                    env={"PYTHONPATH": str(plugin_site), "PADDLE_PDX_CACHE_HOME": str(tmp_path / "model-cache")})
    try:
        assert server.client.get("/ready").json()["endpoints"] == ["/image-classification"]
        for value, name in ((0, "dark"), (255, "bright")):
            ok, png = cv2.imencode(".png", np.full((20, 20, 3), value, np.uint8))
            resp = server.post("/image-classification", {"image": base64.b64encode(png.tobytes()).decode(), "visualize": False})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["errorCode"] == 0 and [c["name"] for c in body["result"]["categories"]] == [name]
    finally:
        server.stop()


def test_delta_output_on_a_store_delta_rs_cannot_write_is_a_usage_error(plugin_site, tmp_path):
    """The memory store serves inputs, not tables: one line naming the scheme, exit 2, before any work."""
    proc = run_pxflow(tmp_path, "annotate", "--runner", "marked",
                      "--pipeline", "plugin_classifier",
                      "--model-dir", "memory://models/toy", "--input", "memory://bucket/", "--output", "memory://bucket/out",
                      PYTHONPATH=str(plugin_site), PXFLOW_TEST_RUNNER_MARK=str(tmp_path / "mark"),
                      PADDLE_PDX_CACHE_HOME=str(tmp_path / "model-cache"))
    line = single_error_line(proc, tmp_path)
    assert "--output memory://bucket/out" in line and "cannot be written to memory://" in line, line
    assert not (tmp_path / "model-cache").exists()  # no model was staged: nothing ran before the check


@pytest.fixture()
def memory_plugin(plugin_site, monkeypatch):
    """The plug-in's modules imported in this process from its site folder (its store registered)."""
    monkeypatch.syspath_prepend(str(plugin_site))
    plugin = importlib.import_module(PACKAGE)
    plugin.register()
    return importlib.import_module(f"{PACKAGE}.store")


def test_planning_rechecks_a_manifest_entry_of_a_plugin_store(memory_plugin, monkeypatch):
    """A manifest entry carries no etag: planning asks its store, whatever the scheme, and re-annotates a change."""
    from pxflow.pipelines.io.storage import Storage
    from pxflow.tasks.plan import PlanStats, plan

    uri = "memory://bucket/dark.png"
    monkeypatch.setitem(memory_plugin.OBJECTS, uri, b"rewritten since its row")
    was = hashlib.md5(memory_plugin.OBJECTS["memory://bucket/bright.png"]).hexdigest()
    annotated = {uri: ("the etag of its row", False), "memory://bucket/bright.png": (was, False)}
    stats = PlanStats()
    shards = list(plan([uri, "memory://bucket/bright.png"], annotated, 10, Storage(), stats))
    assert (stats.changed, stats.unchanged, stats.new) == (1, 1, 0)
    assert [s.uris for s in shards] == [(uri,)]


def test_a_plugin_runner_is_a_runner_with_the_local_gpu_slot_tags(memory_plugin, prefect_server):
    from pxflow.flows.runners import get_runner, gpu_slot_tag, register_runner, runner_names

    runner = get_runner("marked")
    assert "marked" in runner_names() and runner.in_process and runner.runs_tasks
    assert runner.shard_tags("gpu:1") == [gpu_slot_tag("gpu:1")] and runner.shard_tags("cpu") == []
    with pytest.raises(TypeError, match="takes a pxflow.flows.runners.Runner instance"):
        register_runner("mine")  # a name alone (the old name-and-factory form is gone)


RUNNER_NAMES = {"thread", "process", "dask", "ray", "deployment"}


def test_no_runner_name_is_compared_outside_the_runner_modules():
    """What a runner does is its methods': a name compared elsewhere is a plug-in runner treated differently."""
    paths = [ROOT / "flows" / "annotate.py", ROOT / "flows" / "groups.py", ROOT / "flows" / "index.py",
             *sorted((ROOT / "flows" / "cli").glob("*.py")), *sorted((ROOT / "tasks").glob("*.py"))]
    offenders = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                literals = [c for side in (node.left, *node.comparators) for c in ast.walk(side)
                            if isinstance(c, ast.Constant) and c.value in RUNNER_NAMES]
                if literals:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
