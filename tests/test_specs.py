"""Pipelines describe themselves (issue 16, part 1): a ``PipelineSpec`` per package is what
``create_pipeline``, ``load_config``, ``predict()``'s option check and the CLIs' pipeline flags read.

The toy classifier of ``tests/support/toy_classifier`` is the plug-in: its spec brings its own YAML
and its own option (``min_score``); nothing in pxflow names it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest

import tests.support.toy_classifier as toy
from pxflow.flows.cli import main as pxflow_main
from pxflow.pipelines import create_pipeline
from pxflow.pipelines.config import load_config
from pxflow.pipelines.registry import BUILTIN_SPECS, PIPELINES, pipeline_names, pipeline_spec, register_pipeline
from pxflow.pipelines.spec import resolve
from tests.conftest import ROOT
from tests.support.cli import run_pxflow, single_error_line
from tests.support.toy_classifier.model import build

BUILTIN = ["object_detection", "small_object_detection", "instance_segmentation", "open_vocabulary_segmentation",
           "PP-ShiTuV2"]


@pytest.fixture
def registry_restored():
    """Pipelines a test registers are gone after it (the registry is process-wide)."""
    before = dict(PIPELINES)
    yield
    PIPELINES.clear()
    PIPELINES.update(before)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory) -> str:
    return build(str(tmp_path_factory.mktemp("toy") / "model"))


def _toy_config(model: str) -> dict:
    return {"SubModules": {"ImageClassification": {"model_dir": model}}}


BLACK = np.zeros((20, 30, 3), np.uint8)


# -- a plug-in pipeline is created by name, from its own YAML ------------------------------------
def test_a_plugin_pipeline_is_created_by_name_from_its_own_yaml(toy_model):
    config = load_config("toy_classifier")  # the spec's YAML, outside pxflow.configs
    assert config["SubModules"]["ImageClassification"]["batch_size"] == 2
    pipe = create_pipeline("toy_classifier", config=_toy_config(toy_model))
    (res,) = pipe.predict(BLACK)
    assert res.ok and res["label_names"] == ["dark"] and pipe.batch_size == 2


def test_index_is_refused_from_the_spec_not_a_list_of_names(toy_model, registry_restored):
    with pytest.raises(TypeError, match=r"index=.*PP-ShiTuV2.*not toy_classifier"):
        create_pipeline("toy_classifier", config=_toy_config(toy_model), index="/some/index")
    # the same pipeline under a spec that takes an index: accepted, and handed to the pipeline's config
    register_pipeline(dataclasses.replace(toy.SPEC, name="toy_indexed", takes_index=True))
    pipe = create_pipeline("toy_indexed", config={"pipeline_name": "toy_indexed", **_toy_config(toy_model)},
                           index="/some/index")
    assert pipe.config["index"] == "/some/index"


def test_register_pipeline_name_target_still_works_but_needs_a_yaml_path(registry_restored):
    register_pipeline("toy_old_style", "tests.support.toy_classifier.pipeline:ToyClassifierPipeline")
    assert "toy_old_style" in pipeline_names()
    assert pipeline_spec("toy_old_style").pipeline_class().__name__ == "ToyClassifierPipeline"
    with pytest.raises(ValueError, match="registered without a default config: give its YAML path"):
        load_config("toy_old_style")


# -- typed predict options -----------------------------------------------------------------------
def test_predict_options_are_checked_by_the_specs_model(toy_model):
    pipe = create_pipeline("toy_classifier", config=_toy_config(toy_model))
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) 'threshold' \(it takes: .*min_score"):
        next(pipe.predict(BLACK, threshold=0.5))
    with pytest.raises(ValueError, match=r"min_score: Input should be a valid number.*'high'"):
        next(pipe.predict(BLACK, min_score="high"))
    (res,) = pipe.predict(BLACK, min_score=0.99)  # the option reaches run_batch: the 0.9975 label stays ...
    assert res["label_names"] == ["dark"]
    (res,) = pipe.predict(BLACK, min_score=0.999)  # ... and goes above it
    assert res["label_names"] == []


@pytest.mark.parametrize("name", BUILTIN)
def test_each_builtin_spec_options_model_matches_what_predict_takes(name):
    """The model names exactly the keywords the pipeline's ``validate_kwargs`` handles (none lost, none invented)."""
    spec = pipeline_spec(name)
    assert spec.name == name and spec in [resolve(t) for t in BUILTIN_SPECS]
    params = inspect.signature(spec.pipeline_class().validate_kwargs).parameters.values()
    handled = {p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD}
    assert set(spec.options_model().model_fields) == handled
    assert spec.takes_index == (name == "PP-ShiTuV2")
    assert Path(spec.config_path()).is_file() and load_config(name)["pipeline_name"] == name
    assert spec.endpoints and all(e.path.startswith("/") and ":" in e.handler for e in spec.endpoints)


# -- CLI flags generated from the options model --------------------------------------------------
def test_annotate_help_lists_the_chosen_pipelines_own_flags(capsys):
    with pytest.raises(SystemExit) as done:
        pxflow_main(["annotate", "--pipeline", "toy_classifier", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "options of pipeline toy_classifier" in out and "--min-score" in out and "--min_score" in out
    assert "drop labels scoring below this" in out  # the field's description is the help
    for other in ("--threshold", "--prompt", "--index"):
        assert other not in out


def test_pipeline_flags_become_predict_kwargs():
    from pxflow.flows.cli.annotate import flow_parameters, parse_command_line

    _, args = parse_command_line("annotate", ["--input", "i", "--output", "o", "--pipeline", "toy_classifier",
                                              "--min_score", "0.25"])
    assert flow_parameters(args)["options"].predict_kwargs == {"min_score": 0.25}
    _, args = parse_command_line("annotate", ["--input", "i", "--output", "o", "--pipeline",
                                              "open_vocabulary_segmentation", "--prompt", "per_input"])
    assert flow_parameters(args)["options"].predict_kwargs == {"prompt": "per_input"}
    _, args = parse_command_line("annotate", ["--input", "i", "--output", "o", "--threshold", "{0: 0.3}"])
    assert flow_parameters(args)["options"].predict_kwargs == {"threshold": {0: 0.3}}


def test_another_pipelines_flag_is_a_one_line_usage_error(tmp_path):
    proc = run_pxflow(tmp_path, "annotate", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                      "--prompt", "[[1, 2, 3, 4]]")
    line = single_error_line(proc, tmp_path)
    assert line == ("pxflow annotate: error: --prompt: not an option of pipeline object_detection "
                    "(its options: --threshold) (see pxflow annotate --help)")
    proc = run_pxflow(tmp_path, "--pipeline", "PP-ShiTuV2", "--input", str(tmp_path), "--prompt_type", "box")
    assert "--prompt_type: not an option of pipeline PP-ShiTuV2 (its options: --index, --det-threshold" in \
        single_error_line(proc, tmp_path)


def test_a_plugin_pipeline_from_the_plugins_entry_point_group_gets_its_flags(tmp_path):
    """Installed as a distribution (an entry point in ``pxflow.plugins``), the stock CLI knows the toy's flags."""
    site = tmp_path / "site"
    dist = site / "toy_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pxflow.plugins]\ntoy = tests.support.toy_classifier\n")
    env = {"PYTHONPATH": f"{site}:{ROOT}"}
    proc = run_pxflow(tmp_path, "annotate", "--pipeline", "toy_classifier", "--help", **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--min-score" in proc.stdout and "--threshold" not in proc.stdout
    proc = run_pxflow(tmp_path, "annotate", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                      "--pipeline", "toy_classifier", "--threshold", "0.5", **env)
    assert single_error_line(proc, tmp_path) == (
        "pxflow annotate: error: --threshold: not an option of pipeline toy_classifier (its options: --min-score) "
        "(see pxflow annotate --help)")


# -- no pipeline name compared outside the pipelines ----------------------------------------------
def _compared_names(path: Path) -> list[str]:
    """String constants that are pipeline names and appear in a comparison (``==``, ``in (...)``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                found += [i.value for i in items if isinstance(i, ast.Constant) and i.value in BUILTIN]
    return found


def test_no_pipeline_name_is_compared_in_the_flow_the_tasks_or_the_registry():
    files = [ROOT / "flows" / "annotate.py", ROOT / "pipelines" / "registry.py", ROOT / "flows" / "cli" / "annotate.py",
             ROOT / "flows" / "cli" / "predict.py", *sorted((ROOT / "tasks").glob("*.py"))]
    offenders = {str(p.relative_to(ROOT)): names for p in files if (names := _compared_names(p))}
    assert not offenders, offenders
