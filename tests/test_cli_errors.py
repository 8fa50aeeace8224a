"""The error surface of the ``pxflow`` CLI that scripts and schedulers read (issue 19).

Every case runs the real console entry (``python -m pxflow.flows``, i.e. ``flows.cli.run``) as a
subprocess and checks what a script sees: the exit status, stderr's one line (no usage block, no
pydantic report, no traceback), stdout's JSON, and that no Prefect server started for a usage error
(it would have created its database under the command's own ``PREFECT_HOME``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED
from tests.support.annotate_helpers import read_table
from tests.support.cli import cli_env as _env
from tests.support.cli import run_pxflow as _pxflow
from tests.support.cli import single_error_line as _one_line

PICODET_ONNX = SHARED / "models" / "PicoDet-XS_coco_onnx"
COCO_MINI = SHARED / "data" / "coco_val_mini"
DRINK_LABELS = SHARED / "data" / "drink_dataset_v1.0" / "gallery" / "drink_label.txt"


def _images(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    for path in sorted((COCO_MINI / "images").iterdir())[:n]:
        (src / path.name).symlink_to(path)
    return src


# ---------------------------------------------------------------- 2: a missing or undownloadable model

#: no cached models, and a download URL that refuses at once (nothing reaches the network)
OFFLINE = {"PXFLOW_MODEL_BASE_URL": "http://127.0.0.1:9/models"}


def _missing_model_commands(tmp_path: Path) -> dict[str, tuple[list[str], str, str]]:
    """command -> (argv, the model the line must name, the fix it must give)."""
    images = _images(tmp_path, 1)
    day = tmp_path / "days" / "dt=2024-01-01"
    day.mkdir(parents=True)
    (day / "a.jpg").symlink_to(next(images.iterdir()))
    fix = "give --model-dir DIR"
    return {
        "annotate": (["annotate", "--input", str(images), "--output", str(tmp_path / "out")], "PicoDet-S", fix),
        "backfill": (["backfill", "--input", str(tmp_path / "days"), "--output", str(tmp_path / "out"),
                      "--start", "2024-01-01", "--end", "2024-01-01"], "PicoDet-S", fix),
        "index": (["index", "build", "--root", str(tmp_path / "indexes"), "--name", "drinks", "--gallery",
                   str(DRINK_LABELS), "--index_type", "Flat"], "PP-ShiTuV2_rec", "give --rec_model_dir DIR"),
        "sam": (["--pipeline", "open_vocabulary_segmentation", "--input", str(next(images.iterdir())),
                 "--prompt-type", "box", "--prompt", "[[10, 10, 100, 100]]"], "SAM-H_box", fix),
    }


@pytest.mark.parametrize("command", ["annotate", "backfill", "index", "sam"])
def test_a_missing_model_is_one_line_exit_2_before_any_server(command, tmp_path, shared_dir):
    argv, model, fix = _missing_model_commands(tmp_path)[command]
    proc = _pxflow(tmp_path, *argv, PADDLE_PDX_CACHE_HOME=str(tmp_path / "no-models"), **OFFLINE)
    line = _one_line(proc, tmp_path)
    assert line.startswith("pxflow")
    assert f"model {model!r} is not in {tmp_path / 'no-models'}" in line
    assert fix in line


# ---------------------------------------------------------------- 8: usage errors are one line


@pytest.mark.parametrize("args, expected", [
    (["--workers", "0"], "pxflow annotate: error: --workers: Input should be greater than or equal to 1 (got 0)"),
    (["--prune", "--limit", "2"], "pxflow annotate: error: --prune: prune does not mix with limit"),
    (["--max-error-rate", "1.5"], "pxflow annotate: error: --max-error-rate: Input should be less than or equal to 1"),
    (["--shard-size", "x"], "pxflow annotate: error: argument --shard-size/--shard_size: invalid int value: 'x'"),
], ids=["workers-0", "prune-limit", "max-error-rate", "bad-int"])
def test_annotate_usage_errors_are_one_line_naming_the_flag(args, expected, tmp_path, shared_dir):
    images = _images(tmp_path, 1)
    proc = _pxflow(tmp_path, "annotate", "--input", str(images), "--output", str(tmp_path / "out"),
                   "--model-dir", str(PICODET_ONNX), *args)
    line = _one_line(proc, tmp_path)
    assert line.startswith(expected), line
    assert line.endswith("(see pxflow annotate --help)"), line
    assert "pydantic" not in line and "usage:" not in proc.stderr


def test_a_subcommand_usage_error_is_one_line(tmp_path):
    line = _one_line(_pxflow(tmp_path, "index", "build", "--root", str(tmp_path), "--index_type", "Bogus"), tmp_path)
    assert line == ("pxflow index build: error: argument --index-type/--index_type: invalid choice: 'Bogus' (choose from 'Flat', "
                    "'IVF', 'HNSW32') (see pxflow index build --help)")


def test_an_unknown_deployment_is_one_line_naming_it_and_the_fix(prefect_server, tmp_path, shared_dir):
    images = _images(tmp_path, 1)
    proc = _pxflow(tmp_path, "annotate", "--input", str(images), "--output", str(tmp_path / "out"),
                   "--model-dir", str(PICODET_ONNX), "--runner", "deployment", "--deployment", "nope/missing",
                   PREFECT_API_URL=prefect_server)
    line = _one_line(proc, tmp_path)
    assert line.startswith(f"pxflow annotate: error: runner deployment: no deployment 'nope/missing' on {prefect_server}")
    assert "prefect --no-prompt deploy --prefect-file deployments/prefect.yaml" in line
    assert not (tmp_path / "out" / "images").exists()


def test_an_unknown_deployment_on_the_temporary_server_is_one_line_before_any_flow(tmp_path, shared_dir):
    images = _images(tmp_path, 1)
    proc = _pxflow(tmp_path, "annotate", "--input", str(images), "--output", str(tmp_path / "out"),
                   "--model-dir", str(PICODET_ONNX), "--runner", "deployment", "--no-progress")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ObjectNotFound" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("pxflow annotate")]
    assert "runner deployment: no deployment 'annotate-shard-group/gpu' on http://127.0.0.1:" in line
    assert not (tmp_path / "out" / "images").exists()


# ---------------------------------------------------------------- a real detection output (eval, readers)


@pytest.fixture(scope="module")
def detection_output(tmp_path_factory) -> Path:
    """``pxflow annotate`` of 2 real images with the real PicoDet-XS (boxes, no masks)."""
    tmp = tmp_path_factory.mktemp("detection")
    out = tmp / "out"
    proc = _pxflow(tmp, "annotate", "--input", str(_images(tmp, 2)), "--output", str(out), "--model-dir",
                   str(PICODET_ONNX), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_eval_segm_on_a_detection_run_is_one_line(detection_output, tmp_path, shared_dir):
    proc = _pxflow(tmp_path, "eval", "--output", str(detection_output), "--gt", str(COCO_MINI / "instances_val2017.json"),
                   "--iou-type", "segm")
    line = _one_line(proc, tmp_path)
    assert line == "pxflow eval: segm evaluation needs masks: this run's objects have none (use --iou-type bbox)"


# ---------------------------------------------------------------- 12: the exit path of Delta readers


@pytest.mark.slow
def test_commands_that_read_delta_tables_always_exit_with_their_status_and_full_output(detection_output, tmp_path,
                                                                                       shared_dir):
    """deltalake/arrow readers abort the interpreter's shutdown now and then (exit 134, output lost):
    8 runs of a command that reads the tables must each exit 0 and print its whole JSON."""
    images = detection_output.parent / "in"  # the fixture's input: every image has its row
    for attempt in range(8):
        proc = _pxflow(tmp_path, "annotate", "--input", str(images), "--output", str(detection_output),
                       "--model-dir", str(PICODET_ONNX), "--dry-run")
        assert proc.returncode == 0, (attempt, proc.returncode, proc.stderr[-2000:])
        assert "terminate called" not in proc.stderr
        plan = json.loads(proc.stdout)  # the whole output, its last line included
        assert plan["plans"][0]["unchanged"] == 2 and plan["plans"][0]["to_annotate"] == 0
    proc = _pxflow(tmp_path, "eval", "--output", str(detection_output), "--gt", str(COCO_MINI / "instances_val2017.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])  # what `pxflow eval ... | tail -1` reads
    assert last["images"] == 2 and 0.0 <= last["AP"] <= 1.0


def test_an_abort_in_the_interpreters_exit_cannot_change_a_commands_status_or_output(detection_output, tmp_path,
                                                                                  shared_dir):
    """The upstream abort happens in native exit handlers, only in some runs; ``tests/support/exit_abort.py``
    registers one that aborts on every run. A plain script that reads the tables then dies (SIGABRT, 134) on
    every run; each ``pxflow`` command, ending through ``run()``'s flush and ``os._exit``, exits with its
    own status and its whole output: a new annotate run, its rerun, eval, report and lake vacuum."""
    hook = {"PXFLOW_WORKER_IMPORTS": "tests.support.exit_abort", "PYTHONPATH": str(ROOT)}
    reader = ("import tests.support.exit_abort; from deltalake import DeltaTable; "
              f"print(DeltaTable({str(detection_output / 'images')!r}).to_pyarrow_table().num_rows)")
    control = subprocess.run([sys.executable, "-c", reader], cwd=ROOT, env=_env(tmp_path, **hook),
                             capture_output=True, text=True, timeout=300)
    assert control.returncode == -signal.SIGABRT, (control.returncode, control.stderr[-2000:])  # the hook bites

    out = tmp_path / "out"
    annotate = ["annotate", "--input", str(_images(tmp_path, 2)), "--output", str(out), "--model-dir",
                str(PICODET_ONNX), "--no-progress"]
    proc = _pxflow(tmp_path, *annotate, **hook)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert json.loads(proc.stdout)["images_inferred"] == 2  # the whole summary, its closing brace included
    proc = _pxflow(tmp_path, *annotate, **hook)
    assert proc.returncode == 0 and json.loads(proc.stdout)["unchanged"] == 2, proc.stderr[-2000:]
    proc = _pxflow(tmp_path, "eval", "--output", str(out), "--gt", str(COCO_MINI / "instances_val2017.json"), **hook)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["images"] == 2
    page = tmp_path / "report.html"
    proc = _pxflow(tmp_path, "report", "--output", str(out), "--out", str(page), **hook)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == str(page), proc.stderr[-2000:]
    assert page.read_text(encoding="utf-8").rstrip().endswith("</html>")
    proc = _pxflow(tmp_path, "lake", "vacuum", "--output", str(out), "--dry-run", **hook)
    assert proc.returncode == 0, proc.stderr[-2000:]
    json.loads(proc.stdout)  # complete JSON


# ---------------------------------------------------------------- 6: the error budget


@pytest.mark.slow
def test_a_run_where_every_input_failed_exits_1_over_the_error_budget(tmp_path, shared_dir):
    """A PaddleX gallery label file given as a manifest: every path is relative to another folder, so every
    input is ``not_found``. Every listed input has its row (complete), but the run failed."""
    out = tmp_path / "out"
    proc = _pxflow(tmp_path, "annotate", "--input", str(DRINK_LABELS), "--output", str(out), "--model-dir",
                   str(PICODET_ONNX), "--limit", "3", "--no-progress")
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["images_inferred"] == 3 and summary["images_error"] == 3
    assert summary["error_types"] == {"not_found": 3}
    assert summary["error_budget_exceeded"] is True and summary["error_rate"] == 1.0
    assert summary["max_error_rate"] == 1.0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pxflow annotate: error budget exceeded: 3 of 3 inferred inputs failed"), last
    assert '"not_found": 3' in last
    assert read_table(str(out / "images")).num_rows == 3  # the error rows are kept (a rerun skips them)


@pytest.mark.slow
def test_max_error_rate_fails_a_partly_failed_run_only_when_set(tmp_path, shared_dir):
    """1 real image + 1 missing path: half failed. The default budget (1.0) passes it, 0.25 fails it."""
    images = _images(tmp_path, 1)
    manifest = tmp_path / "inputs.txt"
    manifest.write_text(f"{next(images.iterdir())}\n{tmp_path / 'gone.jpg'}\n")
    common = ["annotate", "--input", str(manifest), "--model-dir", str(PICODET_ONNX), "--no-progress"]
    ok = _pxflow(tmp_path, *common, "--output", str(tmp_path / "a"))
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert json.loads(ok.stdout)["error_budget_exceeded"] is False
    strict = _pxflow(tmp_path, *common, "--output", str(tmp_path / "b"), "--max-error-rate", "0.25")
    assert strict.returncode == 1, strict.stderr[-3000:]
    summary = json.loads(strict.stdout)
    assert summary["error_budget_exceeded"] is True and summary["error_rate"] == 0.5
    assert summary["max_error_rate"] == 0.25


# ---------------------------------------------------------------- 11: SIGTERM


@pytest.mark.slow
def test_sigterm_stops_planning_prints_the_summary_and_exits_143(tmp_path, shared_dir):
    """One image per shard, one at a time: SIGTERM once the first shard committed. The shards committed
    stay (their rows are in the table), the rest is not planned, the summary says interrupted."""
    out = tmp_path / "out"
    n = 24
    argv = [sys.executable, "-m", "pxflow.flows", "annotate", "--input", str(_images(tmp_path, n)), "--output",
            str(out), "--model-dir", str(PICODET_ONNX), "--shard-size", "1", "--workers", "1", "--no-progress"]
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen(argv, cwd=ROOT, env=_env(tmp_path), stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + 240
            while not (out / "images" / "_delta_log").is_dir():
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()[-3000:]
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr_text = (tmp_path / "stderr").read_text()
    assert proc.returncode == 143, stderr_text[-3000:]
    assert "Crash detected" not in stderr_text
    summary = json.loads((tmp_path / "stdout").read_text())
    assert summary["interrupted"] is True and summary["complete"] is False
    assert 1 <= summary["shards_committed"] < n
    assert summary["shards_planned"] == summary["shards_committed"]  # nothing planned was left behind
    assert read_table(str(out / "images")).num_rows == summary["shards_committed"]
    assert "interrupted (SIGTERM)" in stderr_text.strip().splitlines()[-1]
