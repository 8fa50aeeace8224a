"""``pxflow annotate`` and ``pxflow backfill``: the bulk flows from the command line.

With nothing configured the flows run right here, outputs wherever ``--output`` points (a
local folder or ``s3://``). With the default ``--runner thread`` and no ``PREFECT_API_URL``
the flow body runs inline: no Prefect server, no flow or task runs, the shards on a thread
pool of ``--workers`` with the shard task's retries (:mod:`pxflow.flows.inline`); same
tables, summary, report and exit codes, no artifacts. ``--prefect``, ``PREFECT_API_URL`` or
a runner whose shards leave this process (process, dask, ray, deployment) run it as a
Prefect flow run: on ``PREFECT_API_URL`` when set, else on a temporary server.

Flags are kebab-case; the PaddleX-style snake_case spellings are aliases. The pipeline's own
flags (``--threshold`` for the detectors, ``--prompt-type``/``--prompt`` for
open_vocabulary_segmentation, ``--index``/``--rec-topk`` ... for PP-ShiTuV2, a plug-in's) come from
its spec's options model (:mod:`.pipeline_flags`): ``--pipeline NAME --help`` lists them, and
another pipeline's flag is a usage error naming the pipeline's own.
Usage errors (a typo in the pipeline, a bad threshold or prompt, a broken model, an
unknown URI scheme, a partition that does not fit the tables, an input that lists
nothing, a GPU this machine cannot use) are found before any Prefect server starts.
Exit status: 0 when every listed input has its row, 1 when some shard failed or some
input failed transiently (rerun the same command to finish) or the run broke its error
budget (``--max-error-rate``: every inferred input failed, or more than that share), 2 for
usage errors (one stderr line), 143 when SIGTERM stopped it (the summary says ``interrupted``).

Nothing outlives the command (:mod:`flows.cli.server`, shared by every flow command):
for a flow run without ``PREFECT_API_URL`` it starts the temporary Prefect server itself (a child that
dies with it, even on SIGKILL), points every worker at it, and a small reaper process ends
whatever else it started (Dask workers ...) if the command is killed. SIGTERM during the flow
stops planning: shards already committed (and those in flight) stay, the summary is printed,
a rerun finishes the rest; a second SIGTERM ends the command at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from typing import Any, Callable

from .errors import CliParser, UsageError, one_line, validation_line
from .pipeline_flags import add_pipeline_flags, given_options, refuse_other_pipelines_flags, requested_pipeline, spec_for
from .server import PrefectScope, add_prefect_flag, drain_events, sigterm_as_exit
from .spellings import both_spellings


def _flag(p: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """``--kebab-name`` with its ``--snake_name`` alias (when they differ)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
    p.add_argument(*spellings, dest=name.replace("-", "_"), **kwargs)


def _common(p: argparse.ArgumentParser) -> None:
    from pxflow.flows.options import AnnotateOptions
    from pxflow.flows.runners import runner_names
    from pxflow.pipelines.models.backends import backend_names

    # no defaults here: a flag not given leaves the AnnotateOptions field at its default (one place)
    default = {name: field.get_default(call_default_factory=True) for name, field in AnnotateOptions.model_fields.items()}
    _flag(p, "pipeline", default=None, help=f"pipeline name or YAML path (default {default['pipeline']}); its own flags are listed below")
    _flag(p, "shard-size", type=int, default=None, help=f"images per shard (default {default['shard_size']})")
    _flag(p, "workers", type=int, default=None,
          help=f"shards processed at once (threads or worker processes; default {default['concurrency']})")
    _flag(p, "runner", choices=runner_names(), default=None, help=f"task runner (default {default['runner']})")
    _flag(p, "dask-address", default=None, help="an existing Dask scheduler (with --runner dask)")
    _flag(p, "ray-address", default=None, help="an existing Ray cluster (with --runner ray)")
    _flag(p, "deployment", default=None, help="with --runner deployment: the shard-group deployment (flow/name)")
    _flag(p, "shards-per-group", type=int, default=None, help="with --runner deployment: shards per child flow run")
    _flag(p, "device", default=None, help="cpu (default), gpu or gpu:N; a GPU this machine cannot use is an error")
    _flag(p, "limit", type=int, default=None, help="annotate at most N listed inputs")
    _flag(p, "dry-run", action="store_true", help="list and plan only: print the counts, infer and write nothing")
    _flag(p, "log-level", default=None, type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
          help="Prefect and pxflow log level")
    _flag(p, "force", action="store_true", help="re-annotate every input, even unchanged ones")
    _flag(p, "replace", action="store_true", help="re-annotate the whole partition and swap it in atomically")
    _flag(p, "prune", action="store_true", help="drop the rows of inputs that are no longer listed")
    _flag(p, "allow-empty", action="store_true", help="an input that lists nothing is not an error")
    _flag(p, "max-error-rate", type=float, default=None, metavar="RATE",
          help="error budget: exit 1 when more than this share (0..1) of the inferred inputs failed; "
               "a run where every input failed always fails (default 1.0)")
    _flag(p, "model-dir", default=None, help="the pipeline's primary model directory")
    _flag(p, "set", action="append", default=[], metavar="KEY.PATH=VALUE",
          help="config override, e.g. SubModules.Recognition.model_dir=/m (repeatable)")
    _flag(p, "backend", default=None, choices=backend_names(), help="inference backend")
    _flag(p, "download-workers", type=int, default=None,
          help=f"download/decode threads per shard (default {default['download_workers']})")
    _flag(p, "s3-block", default=None, help="Prefect Secret block with S3 settings (JSON)")
    _flag(p, "no-progress", action="store_true", help="no progress bar")
    add_prefect_flag(p, "without a server unless PREFECT_API_URL is set or --runner is not thread")


def build_parser(command: str, spec: Any = None) -> argparse.ArgumentParser:
    """The parser of ``command``; with ``spec`` (a pipeline's :class:`~pxflow.pipelines.spec.PipelineSpec`),
    that pipeline's own flags too (:mod:`.pipeline_flags`)."""
    if command == "backfill":
        p = CliParser(prog="pxflow backfill", description="Annotate dt=YYYY-MM-DD partitions between two dates.")
        p.add_argument("--input", required=True, help="prefix holding dt=YYYY-MM-DD/ partitions")
        p.add_argument("--output", required=True, help="output root (partitions mirror the input's)")
        p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
        p.add_argument("--end", required=True, help="last date, YYYY-MM-DD (inclusive)")
    else:
        p = CliParser(prog="pxflow annotate", description="Annotate images into Delta Lake tables (images, objects, runs).")
        p.add_argument("--input", required=True, help="prefix/folder of images, or a manifest (.parquet/.csv/.txt)")
        p.add_argument("--output", required=True, help="output root: local folder or s3:// prefix")
        p.add_argument("--partition", default=None, help="write into this Hive partition, e.g. dt=2024-01-01")
    _common(p)
    if spec is not None:
        add_pipeline_flags(p, spec)
    return both_spellings(p)


def parse_command_line(command: str, rest: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """``--pipeline`` first, then every flag with that pipeline's own (an unknown pipeline, or another
    pipeline's flag, is a one-line usage error, exit 2: also for ``--help``)."""
    try:
        spec = spec_for(requested_pipeline(rest, DEFAULT_PIPELINE))
        parser = build_parser(command, spec)
    except (ValueError, TypeError, OSError) as exc:
        build_parser(command).error(f"--pipeline: {one_line(exc)}")
    refuse_other_pipelines_flags(parser, spec, rest)
    return parser, parser.parse_args(rest)


#: the pipeline ``--pipeline`` defaults to (AnnotateOptions' default)
DEFAULT_PIPELINE = "object_detection"
#: AnnotateOptions fields whose flag is not ``--<field-with-dashes>``
OPTION_FLAGS = {"concurrency": "--workers", "predict_kwargs": "the pipeline's flags"}


def flow_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """CLI options -> flow parameters (only those given, so the flow's defaults apply otherwise)."""
    from pxflow.flows.options import AnnotateOptions
    from pxflow.pipelines.options import check_options

    # the pipeline's flags, typed by its options model now (the loaded pipeline checks them again in preflight)
    spec = spec_for(args.pipeline or DEFAULT_PIPELINE)
    kwargs = check_options(spec.options_model(), spec.name, given_options(args))
    given = {
        "pipeline": args.pipeline,
        "model_dir": args.model_dir,
        "backend": args.backend,
        "predict_kwargs": kwargs or None,
        "set": list(args.set),
        "shard_size": args.shard_size,
        "concurrency": args.workers,
        "runner": args.runner,
        "dask_address": args.dask_address,
        "ray_address": args.ray_address,
        "deployment": args.deployment,
        "shards_per_group": args.shards_per_group,
        "device": args.device,
        "limit": args.limit,
        "force": args.force,
        "replace": args.replace,
        "prune": args.prune,
        "allow_empty": args.allow_empty,
        "download_workers": args.download_workers,
        "s3_block": args.s3_block,
        "max_error_rate": args.max_error_rate,
    }
    options = AnnotateOptions(**{k: v for k, v in given.items() if v is not None})
    params: dict[str, Any] = {"input": args.input, "output": args.output, "options": options}
    for name in ("start", "end", "partition"):
        if getattr(args, name, None) is not None:
            params[name] = getattr(args, name)
    return params


def preflight(command: str, params: dict[str, Any], write_check: bool = True) -> None:
    """Everything that can be checked without Prefect, before its server starts (raises ValueError/TypeError).

    Computes the run's :class:`~pxflow.tasks.run_plan.RunPlan` once (config, model identities and
    checksums, run key; the models opened and the predict options validated; the partitioning
    checked against the tables) and puts it in ``params["plan"]``: the flow and ``--dry-run`` use it
    instead of preparing the job again. Also checks the output's scheme and that the input lists
    something. The loaded pipeline is kept for the run's own shards.
    """
    from pxflow.pipelines.io.storage import default_storage

    from .locations import check_location, check_table_location

    options = params["options"]
    storage = default_storage()
    check_table_location(params["output"], "--output", storage)  # memory://, https://: exit 2 before any work
    if not options.s3_block:  # a missing bucket, a wrong key or endpoint: one line now (a block is read by the flow)
        check_location(params["input"], "--input", storage)  # first: before seconds of Prefect imports
        check_location(params["output"], "--output", storage)

    from pxflow.flows.annotate_run import _address, check_plan_models, make_plan
    from pxflow.flows.runners import get_runner
    from pxflow.pipelines.io.manifest import iter_entries
    from pxflow.tasks.lake import Lake, parse_partition

    # a GPU the shards' machine (this one) cannot use: exit 2 now, never a quiet CPU run
    runner = get_runner(options.runner)
    runner.check_device(options.device, options.backend, _address(options))
    partition = params.get("partition")
    parse_partition(partition)
    # the checks, cheapest first; what they establish goes into the plan the flow is handed
    plan = make_plan(params["output"], options, partition if command == "annotate" else None, check_tables=False,
                     check_models=False)
    storage.store_for(params["output"])  # an unknown scheme fails here
    if not options.s3_block:  # with a block, its settings are read by the flow (a Prefect server is needed)
        lake = Lake(params["output"], storage)
        for part in _partitions_written(command, params, storage, partition):
            lake.check_partitioning(part)
        plan = replace(plan, tables_checked=True)
        if command == "annotate" and not options.allow_empty and next(iter(iter_entries(params["input"], storage)), None) is None:
            raise ValueError(f"{params['input']} lists no images (a typo? --allow-empty accepts an empty run)")
    runner.preflight(options)  # deployment: a server of the user's is asked now, before anything starts
    # shards in this process (runner thread) keep the loaded pipeline; deployment validates on this CPU
    check_plan_models(plan.job, options)
    params["plan"] = replace(plan, models_checked=True)
    if write_check and not options.s3_block:
        lake.check_writable()


def _partitions_written(command: str, params: dict[str, Any], storage: Any, partition: str | None) -> list[str | None]:
    """The partitions the run writes, to check against the tables: ``--partition`` for annotate; for backfill
    the first ``dt=`` partition of the range (they all share the column ``dt``, which is what a table fixes),
    none when the range holds none (the run writes nothing)."""
    if command != "backfill":
        return [partition]
    from pxflow.flows.backfill_run import date_partitions

    return date_partitions(params["input"], params["start"], params["end"], storage)[:1]


class _Progress:
    """A tqdm bar over images, fed by the flow's progress callback (shards finish out of order)."""

    def __init__(self, disabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc="pxflow annotate", unit="img", disable=disabled or None, file=sys.stderr)
        self.images = 0

    def __call__(self, state: dict[str, Any]) -> None:
        if state.get("listing_done") or (self.bar.total or 0) < state["listed"]:
            self.bar.total = state["listed"]
        self.bar.set_postfix_str(f"shards {state['shards_done']}/{state['shards_planned']}", refresh=False)
        self.bar.update(state["images_done"] - self.images)
        self.images = state["images_done"]

    def close(self) -> None:
        self.bar.close()


def dry_run(command: str, params: dict[str, Any]) -> dict[str, Any]:
    """What a run would do: list and plan against the tables (no inference, no write, no Prefect server)."""
    from pxflow.tasks.credentials import storage_for
    from pxflow.tasks.run_plan import plan_shards

    options, run_plan = params["options"], params["plan"]
    storage = storage_for(None) if not options.s3_block else None
    if storage is None:
        raise ValueError("--dry-run reads the tables directly: use the AWS environment instead of --s3-block")
    if command == "backfill":
        from pxflow.flows.backfill_run import date_partitions
        from pxflow.pipelines.io.uri import join_uri

        targets = [(join_uri(params["input"], name), name)
                   for name in date_partitions(params["input"], params["start"], params["end"], storage)]
    else:
        targets = [(params["input"], params.get("partition"))]
    everything = options.force or options.replace
    out: list[dict[str, Any]] = []
    for input_uri, partition in targets:
        job = run_plan.for_partition(partition).job
        stats, planned = plan_shards(job, input_uri, storage, options.shard_size, options.limit, everything)
        shards = sum(1 for _ in planned)
        out.append({"input": input_uri, "partition": partition, "run_key": job.run_key, **stats.as_dict(),
                    "to_annotate": stats.todo, "shards": shards, "shard_size": options.shard_size})
    return {"dry_run": True, "output": params["output"], "runner": options.runner, "device": options.device,
            "plans": out}


def flush_events(flow_run_id: Any, expected_task_runs: int | None, timeout: float = 15.0) -> int | None:
    """Send every queued event and log, then wait until the server has recorded the run's shard task runs.

    Prefect records task runs from events, asynchronously: a command that exits right after a run
    of many quick (skipped) shards would otherwise leave some of them unrecorded. Returns the count seen.
    """
    drain_events(timeout)
    if flow_run_id is None or not expected_task_runs:
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId,
                                                TaskRunFilter, TaskRunFilterName)

    seen = 0
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        runs = [flow_run_id]
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=runs)))
                ids = list({*runs, *(c.id for c in children)})
                # the expected-th shard task run exists (offset: no need to read them all)
                last = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
                    task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="shard-")),
                    limit=1, offset=expected_task_runs - 1)
                if last:
                    seen = expected_task_runs
                    break
            time.sleep(0.3)
    return seen


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    parser, args = parse_command_line(command, rest)
    if args.shard_size is not None and args.shard_size < 1:
        parser.error("--shard-size must be >= 1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if args.log_level:
        os.environ["PREFECT_LOGGING_LEVEL"] = args.log_level
        logging.basicConfig(level=args.log_level)
        logging.getLogger("pxflow").setLevel(args.log_level)

    from pydantic import ValidationError

    try:
        params = flow_parameters(args)
        preflight(command, params, write_check=not args.dry_run)  # a dry run writes nothing, not even a probe
        if args.dry_run:
            print(json.dumps(dry_run(command, params), indent=1, default=str))
            return 0
    except UsageError:
        raise  # one line (flows.cli.main), not argparse's usage text
    except ValidationError as exc:  # AnnotateOptions: one line naming the flag, not pydantic's report
        parser.error(validation_line(exc, OPTION_FLAGS))
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))

    return _run(command, args, params)


def _run(command: str, args: argparse.Namespace, params: dict[str, Any]) -> int:
    """Run the flow; print its summary. Exit 0 done, 1 failed or over the error budget, 143 stopped by SIGTERM."""
    from pxflow.flows.interrupt import clear_stop, stop_requested
    from pxflow.flows.progress import set_progress_callback
    from pxflow.flows.runners import get_runner

    options = params["options"]
    # inline (no server, no flow runs) unless --prefect, PREFECT_API_URL, or shards that leave this process
    with PrefectScope(inline=not args.prefect and get_runner(options.runner).runs_inline) as prefect, sigterm_as_exit():
        if not prefect.inline or options.s3_block:  # a block's S3 settings are read through the Prefect API
            prefect.ensure()
        if command == "annotate" and not prefect.inline:
            try:  # the temporary server just started: only now can it be asked (preflight asked a server of yours)
                get_runner(options.runner).check_server(options)
            except ValueError as exc:
                print(f"pxflow {command}: {one_line(exc)}", file=sys.stderr)
                return 2
        progress = _Progress(args.no_progress)
        set_progress_callback(progress)
        clear_stop()
        try:
            state = _run_stoppable(lambda: prefect.state(_flow(command, prefect.inline), **params))
        finally:
            set_progress_callback(None)
            progress.close()
        completed = state.is_completed()
        # a failed annotate run that got as far as its summary (interrupted, over the error budget) carries it
        data = state.result(raise_on_failure=False)
        result = data if isinstance(data, dict) else None
        expected = result.get("shards_planned") if result is not None and command == "annotate" else None
        failure = None
        if not completed:
            try:
                state.result()
            except Exception as exc:
                failure = f"pxflow {command}: {type(exc).__name__}: {exc}"
        if not prefect.inline:
            flush_events(state.state_details.flow_run_id, expected)
    if result is not None:
        print(json.dumps(_brief(result), indent=1, default=str))
    if completed:
        return 0
    if (result is not None and result.get("interrupted")) or stop_requested():
        if failure and result is None:
            print(failure, file=sys.stderr)
        done = f"{result.get('shards_committed')} shard(s) committed" if result is not None else "what was committed"
        print(f"pxflow {command}: interrupted (SIGTERM): {done} stay; rerun the same command to finish", file=sys.stderr)
        return 128 + signal.SIGTERM
    if result is not None and result.get("error_budget_exceeded"):
        print(f"pxflow {command}: error budget exceeded: {result['images_error']} of {result['images_inferred']} "
              f"inferred inputs failed (error rate {result['error_rate']}, --max-error-rate {result['max_error_rate']}): "
              f"{json.dumps(result['error_types'], sort_keys=True)}", file=sys.stderr)
        return 1
    if failure:
        print(failure, file=sys.stderr)
    return 1


def _flow(command: str, inline: bool) -> Callable[..., Any]:
    """The command's flow, or inline its body: the body's module imports no Prefect (~1 s saved)."""
    if inline:
        from pxflow.flows.annotate_run import annotate_run
        from pxflow.flows.backfill_run import backfill_run

        return backfill_run if command == "backfill" else annotate_run
    from pxflow.flows.annotate import annotate
    from pxflow.flows.backfill import backfill

    return backfill if command == "backfill" else annotate


def _run_stoppable(run: Callable[[], Any]) -> Any:
    """``run()``: the flow's final state; while it runs, the first SIGTERM stops planning (shards in flight
    commit, the summary is printed, exit 143: :mod:`pxflow.flows.interrupt`) and a second one ends the command.

    The flow runs in a thread of its own: Prefect's engine replaces the main thread's SIGTERM handler
    with one that crashes the run ("Crash detected!"), and it installs none outside the main thread;
    an inline body runs there too, so the main thread is free to take the signal.
    """
    import contextvars
    import threading

    from pxflow.flows.interrupt import request_stop, stop_requested

    def handler(signum: int, frame: Any) -> None:
        if stop_requested():
            raise SystemExit(128 + signum)
        request_stop()

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["state"] = run()
        except BaseException as exc:  # re-raised in the main thread
            outcome["error"] = exc

    if threading.current_thread() is not threading.main_thread():  # no signals here: just run it
        return run()
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,), name="pxflow-flow", daemon=True)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.5)  # wakes up for signals
    finally:
        signal.signal(signal.SIGTERM, previous)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["state"]


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    """What the terminal shows: counts and locations, not the whole config."""
    if "run_key" not in result:
        return result
    keys = ("run_key", "pipeline", "model_name", "partition", "listed", "duplicates", "unchanged", "new", "changed",
            "retried", "pruned", "images_inferred", "images_error", "images_retryable", "objects_written", "error_types",
            "rows_images", "shards_planned", "shards_committed", "shards_skipped", "images_per_second", "tables",
            "images_version", "objects_version", "complete", "interrupted", "error_rate", "max_error_rate",
            "error_budget_exceeded")
    return {k: result.get(k) for k in keys}
