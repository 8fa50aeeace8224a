"""Data flows one way: configs -> pipelines -> tasks -> flows. Nothing imports upward.

Checked statically over every module, so a new upward import fails CI even if
no test happens to execute it. ``pipelines`` must also stay free of Prefect so
it can be used alone, like PaddleX.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["configs", "pipelines", "tasks", "flows"]  # lower first


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_no_upward_imports(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & above)
        for path in (ROOT / layer).rglob("*.py")
        if _imports(path) & above
    }
    assert not offenders, f"{layer} imports from a higher layer: {offenders}"


def test_pipelines_do_not_import_prefect():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "pipelines").rglob("*.py") if "prefect" in _imports(p)]
    assert not offenders, offenders
