"""Data flows one way: configs -> pipelines -> tasks -> flows. Nothing imports upward or sideways.

Checked statically over every module, so a new upward import fails CI even if
no test happens to execute it:

- a layer imports only ``pxflow`` layers below it (and itself);
- nothing imports the bare top-level names (``pipelines``, ``tasks`` ...): they install as ``pxflow.*``;
- ``pipelines`` stays free of Prefect, so it can be used alone, like PaddleX;
- a pipeline folder never imports a sibling pipeline folder (pipelines compose predictors);
- flows never import the CLI (``pxflow.flows.cli``): the CLI is a client of the flows, not a library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["configs", "pipelines", "tasks", "flows"]  # lower first
#: pipeline folders: the ones holding a pipeline.py
PIPELINE_DIRS = sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/pipeline.py"))


def _modules(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(ROOT).with_suffix("")
    package = ["pxflow", *rel.parts[:-1]] if rel.parts[0] in LAYERS else list(rel.parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
                if node.module:
                    names.add(module)
                else:  # `from . import x`: x may be a module
                    names.update(f"{module}.{a.name}" for a in node.names)
            elif node.module:
                names.add(node.module)
    return names


def _python_files(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_no_upward_imports(layer):
    above = {f"pxflow.{name}" for name in LAYERS[LAYERS.index(layer) + 1 :]}
    offenders = {}
    for path in _python_files(layer):
        bad = sorted(m for m in _modules(path) if any(m == a or m.startswith(a + ".") for a in above))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, f"{layer} imports from a higher layer: {offenders}"


@pytest.mark.parametrize("folder", [*LAYERS, "tests", "bench", "scripts", "pxflow"])
def test_nothing_imports_the_bare_top_level_names(folder):
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in _modules(path) if m.split(".")[0] in LAYERS)
        for path in _python_files(folder)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"import these as pxflow.<name>: {offenders}"


def test_pipelines_do_not_import_prefect():
    offenders = [
        str(p.relative_to(ROOT)) for p in _python_files("pipelines") if any(m.split(".")[0] == "prefect" for m in _modules(p))
    ]
    assert not offenders, offenders


def test_there_are_pipeline_folders():
    assert {"object_detection", "instance_segmentation", "pp_shitu_v2"} <= set(PIPELINE_DIRS)


@pytest.mark.parametrize("name", PIPELINE_DIRS)
def test_pipelines_never_import_a_sibling_pipeline(name):
    siblings = {f"pxflow.pipelines.{other}" for other in PIPELINE_DIRS if other != name}
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in _modules(path) if any(m == s or m.startswith(s + ".") for s in siblings))
        for path in _python_files(f"pipelines/{name}")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"pipelines compose predictors and never import each other: {offenders}"


def test_flows_never_import_the_cli():
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in _modules(path) if m.startswith("pxflow.flows.cli"))
        for path in _python_files("flows")
        if "cli" not in path.relative_to(ROOT / "flows").parts and path.name != "__main__.py"  # `python -m` entry
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"flows must not import the CLI: {offenders}"
