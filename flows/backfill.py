"""The ``backfill`` flow: :func:`~.backfill_run.backfill_run` (one ``annotate`` subflow per date partition)
as a Prefect flow. The body and its helpers import no Prefect (the CLI runs them inline without a server)."""

from __future__ import annotations

from prefect import flow

from .backfill_run import backfill_run, date_partitions, parse_day

__all__ = ["backfill", "date_partitions", "parse_day"]

#: every dt=YYYY-MM-DD partition between two dates, incrementally, as a flow run
backfill = flow(name="backfill", log_prints=True, flow_run_name="backfill-{start}-{end}")(backfill_run)
