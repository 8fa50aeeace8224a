"""What a finished annotate run reports: the run manifest (JSON in the output store) and a Prefect artifact."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_table_artifact

from pxflow.tasks.job import AnnotateJob


def build_manifest(job: AnnotateJob, input: str, shard_size: int, outcome: dict[str, Any], seconds: float,
                   flow_run_id: str | None) -> dict[str, Any]:
    """The run manifest: what was asked, what was written, and whether every input has its row."""
    summaries = outcome["summaries"]
    error_types: dict[str, int] = {}
    for s in summaries:
        for name, count in s["error_types"].items():
            error_types[name] = error_types.get(name, 0) + count
    computed = [s for s in summaries if not s.get("skipped")]
    rows_images = sum(s["n_inputs"] for s in summaries)
    computed_images = sum(s["n_inputs"] for s in computed)
    layout = job.layout
    return {
        "run_key": job.run_key,
        "flow_run_id": flow_run_id,
        "pipeline": job.pipeline,
        "model_name": job.model_name,
        "model_sha256": job.model_sha256,
        "predict_kwargs": job.predict_kwargs,
        "config": job.config,
        "input": input,
        "output": job.output,
        "partition": job.partition,
        "shard_size": shard_size,
        "listed_inputs": outcome["listed"],
        "rows_images": rows_images,
        "rows_objects": sum(s["n_objects"] for s in summaries),
        "status_counts": {"ok": sum(s["n_ok"] for s in summaries), "error": sum(s["n_error"] for s in summaries)},
        "error_types": error_types,
        "shards_planned": outcome["planned"],
        "shards_committed": len(summaries),
        "shards_skipped": len(summaries) - len(computed),
        "failed_shards": outcome["failures"],
        "seconds": round(seconds, 3),
        "images_computed": computed_images,
        "images_per_second": round(computed_images / seconds, 3) if seconds > 0 else None,
        "worker_pids": sorted({s["pid"] for s in computed if "pid" in s}),
        "tables": {"objects": layout.table_dir("objects"), "images": layout.table_dir("images")},
        "complete": not outcome["failures"] and rows_images == outcome["listed"],
    }


def publish_summary(manifest: dict[str, Any]) -> None:
    """A Prefect table artifact with the counts, speed, errors and links to the outputs."""
    table = [
        {"metric": "listed inputs", "value": manifest["listed_inputs"]},
        {"metric": "images rows", "value": manifest["rows_images"]},
        {"metric": "status ok", "value": manifest["status_counts"]["ok"]},
        {"metric": "status error", "value": manifest["status_counts"]["error"]},
        *({"metric": f"error: {k}", "value": v} for k, v in sorted(manifest["error_types"].items())),
        {"metric": "objects rows", "value": manifest["rows_objects"]},
        {"metric": "shards committed / planned", "value": f"{manifest['shards_committed']} / {manifest['shards_planned']}"},
        {"metric": "shards skipped (already done)", "value": manifest["shards_skipped"]},
        {"metric": "failed shards", "value": len(manifest["failed_shards"])},
        {"metric": "images/s (computed shards)", "value": manifest["images_per_second"]},
        {"metric": "objects table", "value": manifest["tables"]["objects"]},
        {"metric": "images table", "value": manifest["tables"]["images"]},
        {"metric": "run manifest", "value": manifest["manifest_uri"]},
    ]
    verdict = "complete: every listed input has its row" if manifest["complete"] else "INCOMPLETE"
    create_table_artifact(
        table=table,
        key=f"annotate-{manifest['run_key']}",
        description=(
            f"**annotate** `{manifest['pipeline']}` / `{manifest['model_name']}` run `{manifest['run_key']}`"
            f"{' partition `' + manifest['partition'] + '`' if manifest['partition'] else ''}: {verdict}.\n\n"
            f"Outputs: [objects]({manifest['tables']['objects']}), [images]({manifest['tables']['images']}), "
            f"[manifest]({manifest['manifest_uri']})"
        ),
    )
