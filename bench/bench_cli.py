"""Wall time of maintenance commands and a 10-image ``annotate``, as a user runs them (BENCHMARKS.md, CLI).

    python bench/bench_cli.py [--code DIR]   # DIR: a checkout to time (default: this one), e.g. a
                                             # `git worktree add /tmp/before <commit>` of the base
    python bench/bench_cli.py --annotate-phases [--code DIR]   # only annotate, broken down by phase

Each command is the real CLI (``python -m pxflow.flows`` with the checkout first on ``sys.path``)
in a fresh process, without ``PREFECT_API_URL`` (a temporary server if the command starts one)
unless noted. ``annotate`` runs inline (no server) where the checkout can (``--prefect`` exists):
the ``*_temporary_server`` rows then pass ``--prefect``, the ``*_inline`` rows do not.
Prints one JSON object: seconds per command and the load average before the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PXFLOW_SHARED_DIR", HERE.parent / "shared")).resolve()
IMAGES = SHARED / "data" / "coco_val_mini" / "images"
GT = SHARED / "data" / "coco_val_mini" / "instances_val2017.json"
MODEL = SHARED / "models" / "PicoDet-XS_coco_onnx"
EMBEDDING = SHARED / "models" / "MobileNetV1_embedding_coral"
GALLERY = SHARED / "data" / "drink_dataset_v1.0" / "gallery"

BARE = """
import sys
from pxflow import create_pipeline
pipe = create_pipeline(pipeline="object_detection", config={"SubModules": {"ObjectDetection": {"model_dir": sys.argv[1]}}})
for _ in pipe.predict(sys.argv[2:]):
    pass
"""


#: ``python -c PHASES SPECS ARGV...``: ``pxflow ARGV`` in this process, with wall-clock timers around the
#: functions named in SPECS (``module:attr`` comma-separated); prints ``PHASES {label: [seconds, calls]}``
PHASES = """
import functools, importlib, json, os, sys, time
t0 = time.perf_counter()
times, calls = {}, {}

def wrap(spec):
    module, attr = spec.rsplit(":", 1)
    try:  # a name this checkout does not have (an older one) is skipped
        owner = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = getattr(owner, name)
    except (ImportError, AttributeError):
        return
    if hasattr(fn, "with_options"):  # a Prefect flow or task: its callers need the object (time its body instead)
        return

    @functools.wraps(fn)
    def timed(*a, **k):
        start = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            times[attr] = times.get(attr, 0.0) + time.perf_counter() - start
            calls[attr] = calls.get(attr, 0) + 1
    setattr(owner, name, timed)

from pxflow.flows.cli import main
times["imports before main"] = time.perf_counter() - t0
for spec in sys.argv[1].split(","):
    wrap(spec)
code = main(sys.argv[2:])
times["total in process"] = time.perf_counter() - t0
sys.stdout.flush()
print("PHASES " + json.dumps({k: [round(v, 3), calls.get(k)] for k, v in times.items()}))
sys.stdout.flush()
os._exit(code)
"""

#: what an annotate run spends its time in (the flow's own steps are inside ``_run_stoppable``)
ANNOTATE_PHASES = ",".join([
    "pxflow.flows.cli.annotate:preflight", "pxflow.flows.inline:flow_state", "pxflow.flows.annotate_run:make_plan", "pxflow.tasks.job:prepare_job",
    "pxflow.tasks.model_cache:checked_pipeline", "pxflow.flows.cli.server:start_temporary_server",
    "pxflow.flows.cli.annotate:_run_stoppable", "pxflow.flows.annotate_run:_annotate",
    "pxflow.tasks.annotate_shard:run_shard", "pxflow.tasks.run_plan:plan_shards", "pxflow.tasks.lake:Lake.annotated",
    "pxflow.tasks.lake:Lake.open", "pxflow.tasks.lake:Lake.commit_shard", "pxflow.flows.annotate_run:run_summary",
    "pxflow.flows.annotate_run:publish_summary", "pxflow.flows.annotate_run:publish_report",
    "pxflow.flows.cli.annotate:flush_events", "pxflow.flows.cli.server:TemporaryServer.stop",
])


def phases(cmd: list[str], code: Path, env: dict[str, str], specs: str = ANNOTATE_PHASES) -> dict[str, Any]:
    """Wall seconds of the whole command and of each phase in ``specs`` (one fresh process)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PHASES, specs, *cmd], cwd=code, env=env, capture_output=True,
                          text=True, timeout=900)
    wall = time.perf_counter() - start
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PHASES ")), None)
    if line is None or proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return {"wall": round(wall, 2), **json.loads(line[len("PHASES "):])}


def timed(cmd: list[str], code: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return round(seconds, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", default=str(HERE), help="checkout to time")
    parser.add_argument("--annotate-phases", action="store_true",
                        help="only the annotate rows, each broken down by phase (this checkout's function names)")
    args = parser.parse_args()
    code = Path(args.code).resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    env.update(PYTHONPATH=str(code), PREFECT_HOME=str(work / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cli = [sys.executable, "-m", "pxflow.flows"]
    src = work / "in"
    src.mkdir()
    for path in sorted(IMAGES.iterdir())[:10]:
        (src / path.name).symlink_to(path)
    out = work / "out"
    annotate = [*cli, "annotate", "--input", str(src), "--output", str(out), "--model-dir", str(MODEL), "--no-progress"]
    labels = work / "labels.txt"
    labels.write_text("".join((GALLERY / "drink_label.txt").read_text(encoding="utf-8").splitlines(True)[:6]), encoding="utf-8")
    index = ["--root", str(work / "idx"), "--name", "drinks"]

    result: dict[str, Any] = {"code": str(code), "loadavg_1m_before": round(os.getloadavg()[0], 2)}
    result["bare_predict_10"] = timed([sys.executable, "-c", BARE, str(MODEL), *map(str, sorted(src.iterdir()))], code, env)
    inline = _has_inline_annotate(code)
    if args.annotate_phases:
        print(json.dumps(annotate_phases(result, annotate[3:], code, env, work, inline)))
        return
    if inline:
        result["annotate_10_inline"] = timed(_to(annotate, work / "out-inline"), code, env)
        result["annotate_rerun_inline"] = timed(_to(annotate, work / "out-inline"), code, env)
    result["annotate_10_temporary_server"] = timed(annotate + ["--prefect"] * inline, code, env)
    result["annotate_rerun_nothing_new"] = timed(annotate + ["--prefect"] * inline, code, env)
    result["eval"] = timed([*cli, "eval", "--output", str(out), "--gt", str(GT)], code, env)
    result["lake_vacuum_nothing_to_delete"] = timed([*cli, "lake", "vacuum", "--output", str(out)], code, env)
    timed([*cli, "index", "build", *index, "--gallery", str(labels), "--gallery_root", str(GALLERY),
           "--rec_model_dir", str(EMBEDDING), "--index_type", "Flat"], code, env)
    result["index_gc_nothing_to_delete"] = timed([*cli, "index", "gc", *index], code, env)

    sys.path.insert(0, str(code))
    from pxflow.flows.cli.server import start_temporary_server

    server = start_temporary_server()  # a running server: the scheduled case
    try:
        running = {**env, "PREFECT_API_URL": server.api_url}
        out2 = work / "out2"
        again = [*cli, "annotate", "--input", str(src), "--output", str(out2), "--model-dir", str(MODEL), "--no-progress"]
        result["annotate_10_running_server"] = timed(again, code, running)
        result["annotate_rerun_running_server"] = timed(again, code, running)
    finally:
        server.stop()
    result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


def _has_inline_annotate(code: Path) -> bool:
    """Whether the checkout's ``annotate`` runs inline without a server (it then has ``--prefect``)."""
    proc = subprocess.run([sys.executable, "-m", "pxflow.flows", "annotate", "--help"], cwd=code, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(code)})
    return "--prefect" in proc.stdout


def _to(argv: list[str], output: Path) -> list[str]:
    """``argv`` with ``--output`` set to ``output``."""
    at = argv.index("--output") + 1
    return [*argv[:at], str(output), *argv[at + 1:]]


def annotate_phases(result: dict[str, Any], argv: list[str], code: Path, env: dict[str, str], work: Path,
                    inline: bool = False) -> dict[str, Any]:
    """A 10-image ``annotate`` and a rerun with nothing new, inline (no server: the default where the
    checkout has it), on a temporary server and on a running one, each broken down by phase. The first
    temporary-server row pays the Prefect database's creation in a fresh ``PREFECT_HOME`` (a user's
    persists: later runs do not); the others find it."""
    if inline:
        result["annotate_10_inline"] = phases(_to(argv, work / "out-inline"), code, env)
        result["annotate_rerun_inline"] = phases(_to(argv, work / "out-inline"), code, env)
    flow = argv + ["--prefect"] * inline
    result["annotate_10_temporary_server_fresh_home"] = phases(flow, code, env)
    result["annotate_rerun_temporary_server"] = phases(flow, code, env)
    sys.path.insert(0, str(code))
    from pxflow.flows.cli.server import start_temporary_server

    server = start_temporary_server()
    try:
        running = {**env, "PREFECT_API_URL": server.api_url}
        again = _to(argv, work / "out2")
        result["annotate_10_running_server"] = phases(again, code, running)
        result["annotate_rerun_running_server"] = phases(again, code, running)
    finally:
        server.stop()
    result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    return result


if __name__ == "__main__":
    main()
