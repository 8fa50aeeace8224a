"""The ``pxflow`` command.

``pxflow --pipeline ... --input ...`` behaves like ``paddlex --pipeline ...``
(see :mod:`flows.cli.predict`); subcommands add the batch workflows:

- ``pxflow annotate ...`` / ``pxflow backfill ...``: Prefect flows (:mod:`flows.cli.annotate`)
- ``pxflow index build|append|remove ...``: PP-ShiTu index maintenance (:mod:`flows.cli.index`)
- ``pxflow --help`` lists them all and the pipelines; ``pxflow --version`` prints the installed version;
  a mistyped command gets a "did you mean" (exit 2)

Every subcommand that runs a flow owns its Prefect API (:mod:`flows.cli.server`); a
:class:`~flows.cli.errors.UsageError` from any of them is one stderr line and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> module with a ``main(argv) -> int``
SUBCOMMANDS = {
    "annotate": "pxflow.flows.cli.annotate",
    "backfill": "pxflow.flows.cli.annotate",
    "index": "pxflow.flows.cli.index",
    "export": "pxflow.flows.cli.export",
    "eval": "pxflow.flows.cli.eval",
    "lake": "pxflow.flows.cli.lake",
    "import-gt": "pxflow.flows.cli.import_gt",
    "serve": "pxflow.flows.cli.serve",
    "report": "pxflow.flows.cli.report",
}

DESCRIPTIONS = {
    "annotate": "annotate images under a prefix or manifest into Delta tables (a Prefect flow, run inline without a server)",
    "backfill": "annotate the dt=YYYY-MM-DD partitions between two dates (one annotate subflow each)",
    "index": "build, append to or remove from a PP-ShiTu index",
    "eval": "COCOeval of an annotate output against ground truth",
    "export": "export an annotate output as COCO, or to Label Studio / CVAT for review",
    "lake": "maintain the output tables (optimize, vacuum)",
    "import-gt": "store reviewed labels (Label Studio, CVAT, COCO) as the output's ground truth",
    "serve": "serve the pipelines over HTTP",
    "report": "the HTML report of an annotate run (samples drawn, classes, scores, errors, changes)",
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("pxflow")
    except PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


def top_level_help() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = [
        "usage: pxflow <command> [options]      (pxflow <command> --help for its options)",
        "       pxflow --pipeline NAME --input PATH [--device cpu] [--save-path DIR]   (PaddleX-style predict)",
        "       pxflow --version",
        "",
        "commands:",
        *(f"  {n.ljust(width)}  {DESCRIPTIONS.get(n, '')}" for n in SUBCOMMANDS),
        "",
        "PaddleX-style predict options: pxflow --pipeline NAME --help",
        "",
        "pipelines (--pipeline NAME, or a pipeline YAML):",
        *(f"  {name}" for name in _pipeline_names()),
        "",
        "annotate and backfill (--runner thread), eval, export, lake and index run without a Prefect server",
        "unless PREFECT_API_URL is set or --prefect is given.",
    ]
    return "\n".join(lines)


def _pipeline_names() -> list[str]:
    from pxflow.pipelines.registry import pipeline_names

    return pipeline_names()


def main(argv: list[str] | None = None) -> int:
    from pxflow.pipelines.plugins import load_plugins

    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"] or args == ["-V"]:
        print(f"pxflow {version()}")
        return 0
    try:  # before any parser reads its choices (--runner, --backend, the pipeline names)
        load_plugins()
    except ImportError as exc:  # a broken plug-in: one line naming it, not a traceback from some parser
        print(f"pxflow: {exc}", file=sys.stderr)
        return 1
    if args in ([], ["-h"], ["--help"]):
        print(top_level_help())
        return 0
    if args and not args[0].startswith("-") and args[0] not in SUBCOMMANDS:  # a mistyped command, not a predict flag
        from .spellings import suggestion

        print(f"pxflow: unknown command {args[0]!r}{suggestion(args[0], SUBCOMMANDS) or ''}"
              " (pxflow --help lists the commands)", file=sys.stderr)
        return 2
    from pxflow.flows.runners import WORKER_IMPORTS_ENV, import_modules, worker_imports

    try:  # what local workers import (plug-ins, the crash tests' hooks): here too
        import_modules(worker_imports())
    except ImportError as exc:
        print(f"pxflow: {WORKER_IMPORTS_ENV}: cannot import {exc.name or exc}: {exc}", file=sys.stderr)
        return 2
    if args and args[0] in SUBCOMMANDS:
        from pxflow.pipelines.models.source import ModelUnavailableError

        from .errors import UsageError, model_error_line, one_line
        from .server import ServerStartError

        module = importlib.import_module(SUBCOMMANDS[args[0]])
        try:
            return int(module.main(args) or 0)
        except UsageError as exc:  # bad input found before any work: one line, exit 2 (see run())
            print(f"pxflow {args[0]}: {one_line(exc)}", file=sys.stderr)
            return 2
        except ModelUnavailableError as exc:  # a model neither cached nor downloadable: a usage error too
            print(f"pxflow {args[0]}: {model_error_line(exc, MODEL_FIXES.get(args[0], 'give --model-dir DIR'))}", file=sys.stderr)
            return 2
        except ServerStartError as exc:  # no Prefect API to run the flow on: one line, nothing left running
            print(f"pxflow {args[0]}: {one_line(exc)}", file=sys.stderr)
            return 1
    from .predict import main as predict_main

    return int(predict_main(args) or 0)


#: how a subcommand is pointed at a model directory (named in "model unavailable" errors)
MODEL_FIXES = {"index": "give --rec_model_dir DIR",
               "annotate": "give --model-dir DIR (or --set SubModules.<name>.model_dir=DIR)",
               "backfill": "give --model-dir DIR (or --set SubModules.<name>.model_dir=DIR)"}


def run() -> None:
    """The console script: ``main()``, then a deliberate exit with its status.

    Every command has done its own cleanup when ``main()`` returns (the temporary Prefect server
    stopped, Prefect's events drained: :func:`pxflow.flows.cli.server.prefect_api`; ``pxflow
    serve``'s uvicorn shut down). What is left is the interpreter's own shutdown, where native
    libraries' threads (delta-rs/arrow readers, ONNX Runtime, Paddle) now and then abort the
    process ("terminate called without an active exception", status 134) and lose buffered
    output. So stdout and stderr are flushed and the process ends with ``os._exit``: the exit
    status is always the command's, and the last stdout line (eval's JSON) is always there.
    """
    try:
        code = main()
    except SystemExit as exc:  # argparse's usage errors, SIGTERM outside a flow
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code not in (None, 0) and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except Exception:  # a bug: its traceback, and still our exit path
        import traceback

        traceback.print_exc()
        code = 1
    exit_now(code)


def exit_now(code: int) -> None:
    """Flush stdout and stderr, then end the process with ``code`` (no interpreter shutdown)."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (pxflow ... | head): nothing more to deliver
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
