"""The ``annotate`` flow: the run of :mod:`.annotate_run` as a Prefect flow.

The body (plan, shards, tables, summary, report) is :func:`~.annotate_run.annotate_run`, which imports
no Prefect: the CLI runs it inline when no server is configured. This module is what a flow run
imports (deployments' ``pxflow.flows.annotate:annotate``, ``--prefect``, ``PREFECT_API_URL``, runners
whose shards leave the process): the same function as a flow, and the ``annotate-shard`` task the
body submits in a flow run to the runner's task runner, entered in the flow run itself (looked up here,
so a test can give it other options).
"""

from __future__ import annotations

from prefect import flow

from pxflow.tasks.annotate_shard import annotate_shard

from .annotate_run import EmptyInputError, IncompleteRunError, annotate_run, job_for, make_plan

__all__ = ["annotate", "annotate_shard", "EmptyInputError", "IncompleteRunError", "job_for", "make_plan"]


def _run_name() -> str:
    """``annotate-<pipeline>[-<partition>]``: what the run does, in the UI's run list."""
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    options = params.get("options") or {}
    pipeline = getattr(options, "pipeline", None) or (options.get("pipeline") if isinstance(options, dict) else None)
    name = f"annotate-{str(pipeline or 'object_detection').rsplit('/', 1)[-1]}"
    return f"{name}-{params['partition']}" if params.get("partition") else name


#: the whole run (:func:`~.annotate_run.annotate_run`) as a flow run
annotate = flow(name="annotate", log_prints=True, flow_run_name=_run_name)(annotate_run)
