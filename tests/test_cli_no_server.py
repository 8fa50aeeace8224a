"""Maintenance and evaluation commands, and annotate with its thread runner, run without a Prefect server
(issue 19, item 9); flags have
both spellings and typos get a "did you mean" (item 10).

Every command runs as the real console script in a subprocess without ``PREFECT_API_URL`` and with
its own ``PREFECT_HOME``: a Prefect server would create its database there, and a watcher records
any descendant process whose command line runs ``prefect.server`` (the temporary server's uvicorn).
The data is real: PicoDet-XS (ONNX) rows of coco_val_mini committed as ``annotate`` does, and an
index of real drink-gallery embeddings.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import COCO_MINI, DRINK, PICODET_ONNX, ROOT, SHARED
from tests.support.annotate_helpers import comparable_rows, read_table
from tests.test_export_eval import GT, annotate_into, coco_uris, last_json, table_rows

PXFLOW = str(Path(sys.executable).parent / "pxflow")
EMBEDDING = SHARED / "models" / "MobileNetV1_embedding_coral"


def run_watched(args: list[str], home: Path, every: set[str] | None = None,
                **env: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``pxflow args``; returns the result and the command lines of Prefect servers it started.

    ``every``: filled with the command line of every descendant process and every port the command
    or a descendant listened on (``listen:PORT``)."""
    import psutil

    full = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    full.update(PREFECT_HOME=str(home), PYTHONPATH=str(ROOT), **env)
    proc = subprocess.Popen([PXFLOW, *args], cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    servers: set[str] = set()
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            children = parent.children(recursive=True)
            for child in children:
                line = " ".join(child.cmdline())
                if "prefect.server" in line:
                    servers.add(line)
                if every is not None:
                    every.add(line)
            if every is not None:
                every.update(f"listen:{c.laddr.port}" for p in (parent, *children) for c in p.net_connections("inet")
                             if c.status == psutil.CONN_LISTEN)
        except psutil.Error:
            pass
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), servers


def printed_json(stdout: str) -> dict:
    """The indented JSON summary ``annotate``/``backfill`` print last."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def assert_no_server(proc: subprocess.CompletedProcess, servers: set[str], home: Path) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not servers, servers
    assert not (home / "prefect.db").exists()
    assert "View at" not in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def detections(tmp_path_factory, shared_dir) -> str:
    """10 coco_val_mini images through PicoDet-XS, committed as 2 shards of annotate output."""
    out = str(tmp_path_factory.mktemp("det") / "out")
    annotate_into(out, coco_uris(10), shard_size=5)
    return out


def test_eval_export_and_lake_run_without_a_prefect_server(detections, tmp_path):
    home = tmp_path / "home"
    proc, servers = run_watched(["eval", "--output", detections, "--gt", str(GT)], home)
    assert_no_server(proc, servers, home)
    result = last_json(proc.stdout)
    assert result["images"] == 10 and 0.1 < result["AP"] <= 1.0, result  # COCOeval ran on the 10 images

    dets = tmp_path / "dets.json"
    proc, servers = run_watched(["export", "coco", "--output", detections, "--out", str(dets)], home)
    assert_no_server(proc, servers, home)
    assert len(json.loads(dets.read_text())) == len(table_rows(detections, "objects"))

    proc, servers = run_watched(["lake", "optimize", "--output", detections], home)
    assert_no_server(proc, servers, home)
    assert last_json(proc.stdout)["optimize"]["objects"]["files_after"] == 1  # the 2 shards' files compacted
    proc, servers = run_watched(["lake", "vacuum", "--output", detections, "--retention-hours", "0", "--force"], home)
    assert_no_server(proc, servers, home)
    assert last_json(proc.stdout)["vacuum"]["objects"]["files_deleted"] == 2  # what optimize replaced


def test_index_commands_run_without_a_prefect_server(tmp_path, shared_dir):
    gallery = DRINK / "gallery"
    labels = tmp_path / "labels.txt"
    labels.write_text("".join((gallery / "drink_label.txt").read_text(encoding="utf-8").splitlines(True)[:6]),
                      encoding="utf-8")
    home = tmp_path / "home"
    where = ["--root", str(tmp_path / "idx"), "--name", "drinks"]
    model = ["--gallery", str(labels), "--gallery-root", str(gallery), "--rec-model-dir", str(EMBEDDING)]
    # both spellings of the same flags, as PaddleX users and kebab-case scripts write them
    proc, servers = run_watched(["index", "build", *where, *model, "--index-type", "Flat"], home)
    assert_no_server(proc, servers, home)
    built = last_json(proc.stdout)
    assert built["version"] == "v000001" and built["ntotal"] == 6 and built["index_type"] == "Flat"
    proc, servers = run_watched(["index", "build", *where, "--gallery", str(labels), "--gallery_root", str(gallery),
                                 "--rec_model_dir", str(EMBEDDING), "--index_type", "Flat"], home)
    assert_no_server(proc, servers, home)
    assert last_json(proc.stdout)["version"] == "v000002" and last_json(proc.stdout)["features_reused"] == 6
    for args in (["rollback", *where, "--version", "v000001"], ["gc", *where, "--keep", "1"]):
        proc, servers = run_watched(["index", *args], home)
        assert_no_server(proc, servers, home)
    assert last_json(proc.stdout)["deleted"] == ["v000001", "v000002"] and last_json(proc.stdout)["current"] == "v000003"
    assert "telemetry" not in proc.stderr.lower()


def test_annotate_runs_inline_without_any_process_or_port_and_writes_the_rows_of_a_flow_run(tmp_path, shared_dir):
    """``pxflow annotate`` (runner thread, no PREFECT_API_URL): no server, no child process, no listening
    port, no Prefect database; the same rows, runs row and report as the same run with ``--prefect``."""
    src = tmp_path / "in"
    src.mkdir()
    for path in sorted((COCO_MINI / "images").iterdir())[:6]:
        (src / path.name).symlink_to(path)

    def argv(out: Path, *extra: str) -> list[str]:
        return ["annotate", "--input", str(src), "--output", str(out), "--model-dir", str(PICODET_ONNX),
                "--shard-size", "2", "--workers", "2", "--no-progress", *extra]

    home, every = tmp_path / "home", set()
    proc, servers = run_watched(argv(tmp_path / "inline"), home, every=every)
    assert_no_server(proc, servers, home)
    assert every == set(), every  # not even the reaper: nothing to reap, nothing listening
    assert "Beginning flow run" not in proc.stderr  # no flow run either
    flow_home = tmp_path / "flow-home"
    flow, flow_servers = run_watched(argv(tmp_path / "flow", "--prefect"), flow_home)
    assert flow.returncode == 0, flow.stderr[-3000:]
    assert flow_servers and (flow_home / "prefect.db").exists() and "Beginning flow run" in flow.stderr

    for table in ("images", "objects"):
        assert comparable_rows(str(tmp_path / "inline" / table)) == comparable_rows(str(tmp_path / "flow" / table))
    assert len(comparable_rows(str(tmp_path / "inline" / "objects"))) > 0
    (run,) = read_table(str(tmp_path / "inline" / "runs")).to_pylist()
    assert run["complete"] and run["listed"] == 6 and run["shards_committed"] == 3 and run["images_error"] == 0
    assert {r["flow_run_id"] for r in read_table(str(tmp_path / "inline" / "images")).to_pylist()} == {run["flow_run_id"]}
    assert (tmp_path / "inline" / "_reports" / f"{run['flow_run_id']}.html").is_file()
    printed = printed_json(proc.stdout)  # the summary the command prints
    assert printed["complete"] and printed["shards_committed"] == 3 and printed["objects_written"] > 0, printed

    rerun, servers = run_watched(argv(tmp_path / "inline"), home)  # nothing new: every shard skipped, no server
    assert_no_server(rerun, servers, home)
    assert printed_json(rerun.stdout)["unchanged"] == 6 and printed_json(rerun.stdout)["images_inferred"] == 0


def test_backfill_runs_each_partition_inline_without_a_server(tmp_path, shared_dir):
    """``pxflow backfill`` (runner thread, no PREFECT_API_URL): each partition's annotate body runs inline (a
    subflow call would need a server), one partition's rows per ``dt``; the rerun finds both unchanged."""
    images = sorted((COCO_MINI / "images").iterdir())
    src = tmp_path / "in"
    for part, files in {"dt=2024-01-01": images[0:2], "dt=2024-01-02": images[2:3], "dt=2024-02-01": images[3:4]}.items():
        (src / part).mkdir(parents=True)
        for f in files:
            (src / part / f.name).symlink_to(f)
    argv = ["backfill", "--input", str(src), "--output", str(tmp_path / "out"), "--start", "2024-01-01",
            "--end", "2024-01-31", "--model-dir", str(PICODET_ONNX), "--no-progress"]
    home = tmp_path / "home"
    proc, servers = run_watched(argv, home)
    assert_no_server(proc, servers, home)
    rows = read_table(str(tmp_path / "out" / "images")).to_pylist()
    assert sorted((r["dt"], r["image_uri"].rsplit("/", 1)[-1]) for r in rows) == sorted(
        [("2024-01-01", images[0].name), ("2024-01-01", images[1].name), ("2024-01-02", images[2].name)])
    assert len(read_table(str(tmp_path / "out" / "runs")).to_pylist()) == 2  # one annotate run per partition
    assert printed_json(proc.stdout)["annotated"] == ["dt=2024-01-01", "dt=2024-01-02"]
    rerun, servers = run_watched(argv, home)
    assert_no_server(rerun, servers, home)
    assert printed_json(rerun.stdout)["unchanged"] == ["dt=2024-01-01", "dt=2024-01-02"]


def test_prefect_flag_runs_the_flow_on_a_temporary_server_without_dead_links_or_telemetry(detections, tmp_path):
    home = tmp_path / "home"
    proc, servers = run_watched(["lake", "vacuum", "--output", detections, "--prefect"], home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert servers and (home / "prefect.db").exists()  # the flow ran on a server: --prefect was obeyed
    assert "Beginning flow run" in proc.stderr  # Prefect's own run log: a real flow run
    assert "View at" not in proc.stdout + proc.stderr  # the server is gone when the command ends
    assert "telemetry" not in proc.stderr.lower()
    assert last_json(proc.stdout)["dry_run"] is False


@pytest.mark.parametrize("args, hint", [
    (["anotate", "--input", "x"], "did you mean 'annotate'?"),
    (["index", "gcc"], "did you mean 'gc'?"),
    (["lake", "vacum", "--output", "x"], "did you mean 'vacuum'?"),
    (["index", "build", "--index-tipe", "Flat"], "did you mean '--index-type'?"),
])
def test_a_typo_gets_did_you_mean_and_exit_2(args, hint, tmp_path):
    proc = subprocess.run([PXFLOW, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PREFECT_HOME": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert hint in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_flag_of_every_subcommand_has_both_spellings():
    import argparse
    import importlib

    from pxflow.flows.cli import SUBCOMMANDS

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    modules = {name: importlib.import_module(module) for name, module in SUBCOMMANDS.items()}
    built = [modules[n].build_parser(n) if n in ("annotate", "backfill") else modules[n].build_parser() for n in modules]
    from pxflow.flows.cli.predict import build_parser as predict_parser

    checked = 0
    for top in [*built, predict_parser()]:
        for parser in parsers(top):
            for option in parser._option_string_actions:
                if option.startswith("--") and ("_" in option or "-" in option[2:]):
                    kebab, snake = "--" + option[2:].replace("_", "-"), "--" + option[2:].replace("-", "_")
                    assert parser._option_string_actions.get(kebab) is parser._option_string_actions.get(snake), option
                    checked += 1
    assert checked > 50
    index = modules["index"].build_parser()
    assert index.parse_args(["build", "--index-type", "Flat"]).index_type == "Flat"
    assert index.parse_args(["build", "--index_type", "IVF"]).index_type == "IVF"


def test_top_level_help_lists_the_pipelines():
    proc = subprocess.run([PXFLOW, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for name in ("object_detection", "instance_segmentation", "PP-ShiTuV2", "open_vocabulary_segmentation"):
        assert f"  {name}\n" in proc.stdout + "\n", proc.stdout


def test_model_means_model_dir_in_every_subcommand_that_has_it(capsys):
    """PaddleX's prose says ``--model DIR``; argparse found it ambiguous (``--model-dir`` or ``--model_dir``)."""
    from pxflow.flows.cli.annotate import build_parser as annotate_parser
    from pxflow.flows.cli.predict import build_parser as predict_parser
    from pxflow.flows.cli.serve import build_parser as serve_parser

    parsers = {"pxflow": predict_parser(), "annotate": annotate_parser("annotate"), "backfill": annotate_parser("backfill"),
               "serve": serve_parser()}
    for name, parser in parsers.items():
        assert parser._option_string_actions["--model"] is parser._option_string_actions["--model-dir"], name
    assert parsers["pxflow"].parse_args(["--model", "/models/m"]).model_dir == "/models/m"
    assert parsers["serve"].parse_args(["--pipeline", "object_detection", "--model", "/models/m"]).model_dir == "/models/m"
    assert parsers["annotate"].parse_args(["--input", "i", "--output", "o", "--model", "/models/m"]).model_dir == "/models/m"
    with pytest.raises(SystemExit) as exit_:  # an abbreviation that could mean two flags is refused, naming them
        parsers["serve"].parse_args(["--mod", "/models/m"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "ambiguous option: --mod could match" in err
    assert "could match --model-dir, --model_dir, --model " in err
    from pxflow.flows.cli.index import build_parser as index_parser

    build = index_parser()._subparsers._group_actions[0].choices["build"]
    assert "--model" not in build._option_string_actions and "--rec-model-dir" in build._option_string_actions


#: ``pxflow ARGV`` in this process (``-c``), then which of the heavy modules a run could pull in were imported
IMPORTS_SEEN = """
import json, sys
from pxflow.flows.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"prefect", "matplotlib", "faiss"})
print("SEEN " + json.dumps({"exit": code, "heavy": heavy}))
"""


def _imports_seen(argv: list[str], home: Path, **env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_PROFILE"))}
    full.update(PREFECT_HOME=str(home), PYTHONPATH=str(ROOT), **env)
    proc = subprocess.run([sys.executable, "-c", IMPORTS_SEEN, *argv], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=600)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("SEEN ")), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[len("SEEN "):])


def test_an_inline_annotate_and_backfill_never_import_prefect(tmp_path, shared_dir):
    """The inline path is the flow's body without Prefect (``flows/annotate_run.py``): a 10-image run, its
    report (charts without a plotting library) and a rerun import neither Prefect (~1 s) nor matplotlib, nor
    faiss for a detector; ``--prefect`` imports Prefect (the same body as a flow)."""
    src = tmp_path / "in" / "dt=2024-01-01"
    src.mkdir(parents=True)
    for path in sorted((COCO_MINI / "images").iterdir())[:3]:
        (src / path.name).symlink_to(path)
    home = tmp_path / "home"
    annotate = ["annotate", "--input", str(src), "--output", str(tmp_path / "out"), "--model-dir", str(PICODET_ONNX),
                "--no-progress"]
    assert _imports_seen(annotate, home) == {"exit": 0, "heavy": []}
    assert (tmp_path / "out" / "_reports").is_dir()
    assert _imports_seen(annotate, home) == {"exit": 0, "heavy": []}  # the rerun: nothing new
    backfill = ["backfill", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "bf"), "--start", "2024-01-01",
                "--end", "2024-01-01", "--model-dir", str(PICODET_ONNX), "--no-progress"]
    assert _imports_seen(backfill, home) == {"exit": 0, "heavy": []}
    flow = _imports_seen([*annotate, "--force", "--prefect"], home)
    assert flow["exit"] == 0 and "prefect" in flow["heavy"]


def test_a_server_named_only_in_a_prefect_profile_is_used_not_skipped(tmp_path, shared_dir):
    """Without ``PREFECT_API_URL`` in the environment, a server set in the active Prefect profile still counts
    as configured: the CLI asks Prefect's settings whenever a profile could name one, and answers without
    importing Prefect only when no settings source can."""
    from tests.support.s3_server import free_port

    home = tmp_path / "home"
    home.mkdir()
    url = f"http://127.0.0.1:{free_port()}/api"
    (home / "profiles.toml").write_text(f'active = "remote"\n\n[profiles.remote]\nPREFECT_API_URL = "{url}"\n')
    check = "from pxflow.flows.cli.server import prefect_configured; print(prefect_configured())"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_PROFILE"))}
    asked = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env={**env, "PREFECT_HOME": str(home)},
                           capture_output=True, text=True, timeout=300)
    assert asked.stdout.strip() == "True", asked.stderr[-2000:]
    (home / "profiles.toml").write_text('active = "quiet"\n\n[profiles.quiet]\nPREFECT_LOGGING_LEVEL = "INFO"\n')
    asked = subprocess.run([sys.executable, "-c", check + "; import sys; print('prefect' in sys.modules)"],
                           cwd=tmp_path, env={**env, "PREFECT_HOME": str(home)}, capture_output=True, text=True,
                           timeout=300)
    assert asked.stdout.split() == ["False", "False"], asked.stderr[-2000:]  # answered without importing Prefect
    asked = subprocess.run([sys.executable, "-c", check], cwd=tmp_path,
                           env={**env, "PREFECT_HOME": str(home), "PREFECT_API_URL": url}, capture_output=True,
                           text=True, timeout=300)
    assert asked.stdout.strip() == "True", asked.stderr[-2000:]


def test_a_configured_server_that_does_not_answer_is_one_line_and_leaves_nothing_running(tmp_path, shared_dir):
    """A server named by the active Prefect profile (or ``PREFECT_API_URL``) that is down: the command's one
    stderr line names it and the way out, exit 1, no traceback, before any work; nothing of ours outlives it."""
    import psutil

    from tests.support.s3_server import free_port

    home = tmp_path / "home"
    home.mkdir()
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    (home / "profiles.toml").write_text(f'active = "down"\n\n[profiles.down]\nPREFECT_API_URL = "{url}"\n')
    src = tmp_path / "in"
    src.mkdir()
    first = sorted((COCO_MINI / "images").iterdir())[0]
    (src / first.name).symlink_to(first)
    out = tmp_path / "out"
    proc, servers = run_watched(["annotate", "--input", str(src), "--output", str(out), "--model-dir",
                                 str(PICODET_ONNX), "--no-progress"], home)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("pxflow annotate: the Prefect API at " + url) and "unset PREFECT_API_URL" in lines[0]
    assert not servers and not (out / "images").exists()  # no server of ours, no work
    ours = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("PREFECT_HOME") == str(home):
                ours.append(process.cmdline())
    assert ours == [], ours
