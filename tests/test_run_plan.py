"""One run plan per run (issue 16, item 4): the job is prepared once, each model file read once, and the
plan the CLI computed is what the flow uses; crash injection is test-only; the options import stays light.

Counting is real: the CLI runs in a subprocess whose audit hook (``sys.addaudithook``) sees every
``open()`` of a model file, and :data:`pxflow.tasks.job.CALLS` counts the job preparations.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import COCO_MINI, PICODET_ONNX, ROOT
from tests.support.cli import cli_env

#: runs ``pxflow annotate ARGS`` in this process with an audit hook; prints the counts as JSON
COUNTING_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    model_dir = os.path.realpath(sys.argv[1])
    opened = {}

    def audit(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.realpath(os.fsdecode(args[0]))
            if os.path.dirname(path) == model_dir:
                opened[os.path.basename(path)] = opened.get(os.path.basename(path), 0) + 1

    sys.addaudithook(audit)
    from pxflow.flows.cli import main
    from pxflow.tasks import job

    code = main(["annotate", *sys.argv[2:]])
    sys.stdout.flush()
    print("COUNTS " + json.dumps({"code": code, "prepare_job": job.CALLS["prepare_job"], "opened": opened}))
    sys.stdout.flush()
    os._exit(0)
    """
)


def _inputs(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for path in sorted((COCO_MINI / "images").iterdir())[:n]:
        (src / path.name).symlink_to(path)
    return src


def _counted_run(tmp_path: Path, api_url: str, *args: str) -> dict:
    env = {**cli_env(tmp_path), "PREFECT_API_URL": api_url}
    proc = subprocess.run([sys.executable, "-c", COUNTING_SCRIPT, str(PICODET_ONNX), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("COUNTS ")), None)
    assert line is not None, (proc.stdout[-2000:], proc.stderr[-3000:])
    return json.loads(line[len("COUNTS "):])


def test_one_annotate_run_prepares_its_job_once_and_reads_each_model_file_once(prefect_server, tmp_path, shared_dir):
    src, out = _inputs(tmp_path, 3), tmp_path / "out"
    common = ("--input", str(src), "--output", str(out), "--model-dir", str(PICODET_ONNX), "--no-progress")
    counts = _counted_run(tmp_path, prefect_server, *common)
    assert counts["code"] == 0, counts
    assert counts["prepare_job"] == 1, counts  # the CLI's preflight prepared it; the flow used that plan
    # the checksum read the weights once (the runtime loads them natively), the model's YAML was parsed once
    assert counts["opened"] == {"inference.onnx": 1, "inference.yml": 1}, counts

    dry = _counted_run(tmp_path, prefect_server, *common, "--dry-run")  # nothing new: planned from the same plan
    assert dry["code"] == 0 and dry["prepare_job"] == 1, dry


def test_the_flow_uses_a_matching_plan_and_recomputes_one_made_for_other_options(prefect_server, tmp_path, shared_dir):
    from pxflow.flows.annotate import annotate, make_plan
    from pxflow.flows.options import AnnotateOptions
    from pxflow.tasks import job

    src = _inputs(tmp_path, 2)
    low = AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=0.3)
    high = AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=0.6)
    plan = make_plan(str(tmp_path / "a"), low)

    before = job.CALLS["prepare_job"]
    used = annotate(input=str(src), output=str(tmp_path / "a"), options=low, plan=plan)
    assert job.CALLS["prepare_job"] == before and used["run_key"] == plan.job.run_key

    # the same plan handed to a run with another threshold: its run key would be wrong, so it is recomputed
    other = annotate(input=str(src), output=str(tmp_path / "b"), options=high, plan=plan)
    assert job.CALLS["prepare_job"] == before + 1
    assert other["run_key"] != plan.job.run_key
    assert other["run_key"] == make_plan(str(tmp_path / "b"), high).job.run_key


CHECKPOINT_SCRIPT = "from pxflow.pipelines.hooks import checkpoint; checkpoint('after_plan'); print('survived')"


def test_the_kill_hook_is_test_only(tmp_path):
    """Production code only marks checkpoints: ``PXFLOW_KILL_AT`` does nothing until a test loads its hook."""
    env = {k: v for k, v in os.environ.items() if k not in ("PXFLOW_WORKER_IMPORTS", "PYTHONPATH")}
    plain = subprocess.run([sys.executable, "-c", CHECKPOINT_SCRIPT], cwd=tmp_path, capture_output=True, text=True,
                           env={**env, "PXFLOW_KILL_AT": "after_plan"}, timeout=120)
    assert plain.returncode == 0 and "survived" in plain.stdout, plain.stderr[-2000:]
    from tests.support.faults import kill_env

    hooked = subprocess.run([sys.executable, "-c", "import tests.support.faults; " + CHECKPOINT_SCRIPT], cwd=tmp_path,
                            capture_output=True, text=True, env={**env, **kill_env("after_plan")}, timeout=120)
    assert hooked.returncode == -signal.SIGKILL, hooked.stderr[-2000:]
    for layer in ("pipelines", "tasks", "flows", "configs", "pxflow"):  # nothing in production reads the variables
        for path in (ROOT / layer).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "PXFLOW_KILL" not in text and "support.faults" not in text, path


def test_importing_the_flow_options_does_not_load_faiss():
    code = "import sys, pxflow.flows.options; print(sorted(m for m in sys.modules if m.split('.')[0] == 'faiss'))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_a_worker_import_the_cli_cannot_import_is_one_line_and_exit_2(tmp_path):
    from tests.support.cli import run_pxflow, single_error_line

    proc = run_pxflow(tmp_path, "annotate", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                      PXFLOW_WORKER_IMPORTS="no_such_plugin_module")
    assert "PXFLOW_WORKER_IMPORTS" in single_error_line(proc, tmp_path) and "no_such_plugin_module" in proc.stderr
