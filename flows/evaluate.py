"""COCO export and evaluation of an ``annotate`` output (the Delta ``images`` / ``objects`` tables).

- :func:`export_coco` (flow ``export-coco``): one run key's rows as a COCO **results** file
  (``[{image_id, category_id, bbox, score, segmentation?}]``, what ``COCO.loadRes`` takes) or a
  COCO **dataset** (images with file names and sizes, annotations, categories) that CVAT and
  Label Studio import.
- :func:`evaluate` (flow ``evaluate``): COCOeval (bbox or segm) against a ground-truth file, and
  for PP-ShiTuV2 outputs recall@1 against a gallery label file; publishes a markdown artifact
  ``eval-<run_key>``.

Ids are mapped in one place, :mod:`pxflow.pipelines.evaluation`: class ids by index onto the
ground truth's sorted category ids, image ids by file name (or numeric stem). Images are
``(image_uri, page_index)`` throughout (:mod:`pxflow.pipelines.io.pages`): a PDF's pages are separate
images, never one. See ``docs/evaluation.md``.

The plain functions (:func:`lake_for`, :func:`resolve_run_key`, :func:`load_rows`) need no Prefect
server, so a command line can check its arguments before it starts a flow.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow.compute as pc
from prefect import flow

from pxflow.pipelines import evaluation as ev
from pxflow.pipelines.io.pages import PageKey, page_key
from pxflow.tasks.credentials import storage_for
from pxflow.tasks.lake import Lake, parse_partition

from .inline import in_flow_run, run_logger

OBJECT_COLUMNS = ("image_uri", "page_index", "cls_id", "label", "score", "x1", "y1", "x2", "y2",
                  "mask_counts", "mask_height", "mask_width", "rec_label", "rec_score")
IMAGE_COLUMNS = ("image_uri", "page_index", "status", "error_type", "width", "height", "num_objects")
FORMATS = ("results", "dataset")
IOU_TYPES = ("bbox", "segm")


class TableError(ValueError):
    """The output has no tables, or the run key is missing/ambiguous/unknown (a usage error)."""


def lake_for(output: str, s3_block: str | None = None) -> Lake:
    """The output's tables; :class:`TableError` when ``output`` holds no Delta ``images`` table."""
    lake = Lake(output.rstrip("/"), storage_for(s3_block))
    if lake.open("images") is None:
        raise TableError(
            f"no Delta table at {lake.output}/images: --output must be the output root of `pxflow annotate` "
            "(written with Delta tables)"
        )
    return lake


def _run_filter(run_key: str | None, partition: str | None, names: list[str]):
    condition = None if run_key is None else pc.field("run_key") == run_key
    part = parse_partition(partition)
    if part:
        if part[0] not in names:
            raise TableError(f"the tables have no partition column {part[0]!r} (columns: {', '.join(names)})")
        more = pc.field(part[0]) == part[1]
        condition = more if condition is None else condition & more
    return condition


def run_keys(lake: Lake, partition: str | None = None) -> list[str]:
    """The distinct run keys of the ``images`` table (of one partition when given)."""
    data = lake.dataset("images")
    rows = data.to_table(columns=["run_key"], filter=_run_filter(None, partition, data.schema.names))
    return sorted(pc.unique(rows.column("run_key")).to_pylist())


def resolve_run_key(lake: Lake, run_key: str | None, partition: str | None = None) -> str:
    """``run_key`` when the table has it; the only one when omitted; :class:`TableError` otherwise."""
    keys = run_keys(lake, partition)
    where = f"{lake.output}/images" + (f" ({partition})" if partition else "")
    if not keys:
        raise TableError(f"{where} has no rows")
    if run_key is None:
        if len(keys) > 1:
            raise TableError(f"{where} holds {len(keys)} run keys; choose one with --run-key: {', '.join(keys)}")
        return keys[0]
    if run_key not in keys:
        raise TableError(f"run key {run_key!r} is not in {where}; it holds: {', '.join(keys)}")
    return run_key


#: why a segm evaluation cannot run (the flow's check and the CLI's precheck say the same)
NO_MASKS = "segm evaluation needs masks: this run's objects have none (use --iou-type bbox)"


def check_masks(lake: Lake, run_key: str, partition: str | None = None) -> None:
    """:class:`TableError` when the run's ``objects`` rows hold no mask (a detection run given ``segm``).

    Reads only ``mask_counts`` of the run's rows, so the CLI can say it before any flow starts.
    """
    data = lake.dataset("objects")
    if data is None:  # no objects at all: nothing to evaluate wrongly
        return
    if "mask_counts" not in data.schema.names:
        raise TableError(NO_MASKS)
    rows = data.to_table(columns=["mask_counts"], filter=_run_filter(run_key, partition, data.schema.names))
    if rows.num_rows and rows.column("mask_counts").null_count == rows.num_rows:
        raise TableError(NO_MASKS)


def load_rows(lake: Lake, run_key: str, partition: str | None = None) -> tuple[list[dict], list[dict], str | None]:
    """``(images rows, objects rows, pipeline)`` of one run key (only the columns evaluation needs)."""
    images_data = lake.dataset("images")
    names = images_data.schema.names
    images = images_data.to_table(
        columns=[c for c in (*IMAGE_COLUMNS, "pipeline") if c in names], filter=_run_filter(run_key, partition, names)
    ).to_pylist()
    objects_data = lake.dataset("objects")
    objects: list[dict] = []
    if objects_data is not None:
        onames = objects_data.schema.names
        objects = objects_data.to_table(
            columns=[c for c in OBJECT_COLUMNS if c in onames], filter=_run_filter(run_key, partition, onames)
        ).to_pylist()
    pipeline = images[0].get("pipeline") if images else None
    return images, objects, pipeline


def _labels_by_cls(objects: list[dict]) -> dict[int, str | None]:
    """class id -> its most frequent label in the rows."""
    counts: dict[int, dict[str, int]] = {}
    for row in objects:
        if row.get("cls_id") is None:
            continue
        per = counts.setdefault(int(row["cls_id"]), {})
        if row.get("label") is not None:
            per[row["label"]] = per.get(row["label"], 0) + 1
    return {cls: (max(per, key=lambda k: (per[k], k)) if per else None) for cls, per in counts.items()}


def _gt_images(images: list[dict], gt) -> tuple[list[dict], int]:
    """The image rows (PDF pages by their ``#page=N`` name) that have an id in the ground truth, and how many do not."""
    known = set(gt.getImgIds())
    kept, missing = [], 0
    for row in images:
        try:
            uri, page = page_key(row)
            image_id = ev.image_id_for(uri, gt, page)
        except ValueError:
            image_id = None
        if image_id in known:
            kept.append(row)
        else:
            missing += 1
    return kept, missing


def coco_payload(images: list[dict], objects: list[dict], format: str = "results", gt=None) -> tuple[Any, dict[str, Any]]:
    """The export's JSON payload and counts (plain function: the flow writes it)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    missing = 0
    if gt is not None:
        images, missing = _gt_images(images, gt)
    dataset = ev.table_dataset(images, _labels_by_cls(objects), gt)
    target = gt if gt is not None else ev.coco_from_dataset(dataset)
    keys = {page_key(r) for r in images}
    records, skipped = ev.boxes_from_rows(r for r in objects if page_key(r) in keys)
    detections = ev.detections_from_boxes(records, target)
    counts = {"images": len(images), "detections": len(detections), "objects_skipped": skipped,
              "images_not_in_gt": missing, "masks": sum(1 for d in detections if "segmentation" in d)}
    if format == "results":
        return detections, counts
    dataset["annotations"] = ev.annotations_from_detections(detections)
    return dataset, counts


@flow(name="export-coco")
def export_coco(
    output: str,
    out: str,
    run_key: str | None = None,
    gt: str | None = None,
    format: str = "results",
    partition: str | None = None,
    s3_block: str | None = None,
) -> dict[str, Any]:
    """Write one run key's rows under ``output`` as a COCO results file or dataset at ``out``."""
    logger = run_logger()
    lake = lake_for(output, s3_block)
    run_key = resolve_run_key(lake, run_key, partition)
    images, objects, pipeline = load_rows(lake, run_key, partition)
    truth = ev.load_coco(_local(gt, lake)) if gt else None
    payload, counts = coco_payload(images, objects, format, truth)
    lake.storage.write_bytes(out, json.dumps(payload, ensure_ascii=False).encode("utf-8"))
    logger.info("wrote %s (%s): %d images, %d detections", out, format, counts["images"], counts["detections"])
    return {"run_key": run_key, "pipeline": pipeline, "format": format, "out": out, **counts}


def _local(uri: str, lake: Lake) -> str:
    """A local path for ``uri`` (pycocotools reads files): remote files are copied to a temp file."""
    if "://" not in uri or uri.startswith("file://"):
        return uri[len("file://"):] if uri.startswith("file://") else uri
    import tempfile

    handle = tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False)
    with handle:
        handle.write(lake.storage.read_bytes(uri))
    return handle.name


def evaluate_rows(images: list[dict], objects: list[dict], gt=None, iou_type: str = "bbox",
                  labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Metrics of one run's rows: COCO stats against ``gt`` and/or recall@1 against ``labels``."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    result: dict[str, Any] = {"images": len(images)}
    if gt is not None:
        kept, missing = _gt_images(images, gt)
        keys = {page_key(r) for r in kept}
        records, skipped = ev.boxes_from_rows((r for r in objects if page_key(r) in keys), require_mask=iou_type == "segm")
        if iou_type == "segm" and objects and all(r.get("mask_counts") is None for r in objects):
            raise TableError(NO_MASKS)
        detections = ev.detections_from_boxes(records, gt)
        ids = [ev.image_id_for(uri, gt, page) for uri, page in map(page_key, kept)]
        stats = ev.coco_eval(gt, detections, iou_type, image_ids=ids) if ids else [0.0] * 12
        result.update(ev.stats_dict(stats))
        result.update(images=len(kept), images_not_in_gt=missing, detections=len(detections), objects_skipped=skipped,
                      iou_type=iou_type)
    if labels is not None:  # per image (a PDF page is one; a labelled PDF's label is each page's)
        top: dict[PageKey, str | None] = {page_key(r): None for r in images}
        best: dict[PageKey, float] = {}
        for row in objects:
            score = row.get("score")
            score = float("-inf") if score is None else float(score)
            key = page_key(row)
            if key not in best or score > best[key]:
                best[key] = score
                top[key] = row.get("rec_label")
        by_uri = ev.match_labels({uri for uri, _ in top}, *zip(*labels.items())) if labels else {}
        truth = {key: by_uri[key[0]] for key in top if key[0] in by_uri}
        result.update(ev.recall_at_1(top, truth))
        result["recall_unlabeled_images"] = len(top) - result["recall_images"]
    return result


#: ``--gt lake``: evaluate against the output's own ``ground_truth`` table
LAKE_GT = "lake"


def lake_ground_truth(lake: Lake, objects: list[dict], source: str | None = None) -> tuple[Any, dict[str, Any]]:
    """``(COCO, import)`` of the latest ground-truth import (of ``source``), classes matched to the run by name."""
    from pxflow.tasks.ground_truth import latest_import, read_import

    chosen = latest_import(lake, source)
    return ev.ground_truth_dataset(read_import(lake, chosen["import_id"]), _labels_by_cls(objects)), chosen


def read_labels(label_file: str, root: str | None = None) -> dict[str, str]:
    """``image URI -> label`` of a gallery label file (``path<TAB>label``, pxflow.pipelines.retrieval.gallery)."""
    from pxflow.pipelines.retrieval.gallery import load_gallery

    uris, labels = load_gallery(label_file, root)
    return dict(zip(uris, labels))


@flow(name="evaluate")
def evaluate(
    output: str,
    gt: str | None = None,
    iou_type: str = "bbox",
    run_key: str | None = None,
    labels: str | None = None,
    labels_root: str | None = None,
    partition: str | None = None,
    s3_block: str | None = None,
    gt_source: str | None = None,
) -> dict[str, Any]:
    """COCOeval of one run key against ``gt`` (and recall@1 against the label file ``labels``).

    ``gt="lake"``: the latest import of the output's ``ground_truth`` table (of ``gt_source`` when given).
    """
    if gt is None and labels is None:
        raise ValueError("give a COCO ground truth (gt) and/or a label file (labels)")
    logger = run_logger()
    started = time.perf_counter()
    lake = lake_for(output, s3_block)
    run_key = resolve_run_key(lake, run_key, partition)
    images, objects, pipeline = load_rows(lake, run_key, partition)
    gt_import = None
    if gt == LAKE_GT:  # the output's ground_truth table (pxflow import-gt)
        truth, gt_import = lake_ground_truth(lake, objects, gt_source)
    else:
        truth = ev.load_coco(_local(gt, lake)) if gt else None
    result = evaluate_rows(images, objects, truth, iou_type, read_labels(labels, labels_root) if labels else None)
    result = {**result, "run_key": run_key, "pipeline": pipeline, "output": lake.output, "gt": gt, "labels": labels,
              "seconds": round(time.perf_counter() - started, 3)}
    if gt_import is not None:
        result.update(gt_import=gt_import["import_id"], gt_source=gt_import["source"],
                      gt_source_version=gt_import["source_version"], gt_imported_at=str(gt_import["imported_at"]))
    publish_evaluation(result)
    logger.info("evaluation of run %s: %s", run_key, json.dumps({k: result.get(k) for k in ("AP", "AP50", "recall@1")}))
    return result


def markdown(result: dict[str, Any]) -> str:
    """The evaluation as a markdown table (the artifact's body)."""
    lines = [f"# Evaluation of run `{result['run_key']}` ({result.get('pipeline')})", "",
             f"Output `{result['output']}`" + (f", ground truth `{result['gt']}`" if result.get("gt") else "")
             + (f", labels `{result['labels']}`" if result.get("labels") else ""), "",
             "| metric | value |", "|---|---|"]
    for key in (*ev.STAT_NAMES, "recall@1", "recall_images", "recall_hits", "recall_unlabeled_images",
                "images", "images_not_in_gt", "detections", "objects_skipped", "iou_type"):
        if key in result:
            value = result[key]
            lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    return "\n".join(lines) + "\n"


def publish_evaluation(result: dict[str, Any]) -> None:
    """The markdown artifact ``eval-<run_key>`` of the flow run (inline, without a Prefect API, none)."""
    from prefect.artifacts import create_markdown_artifact

    if not in_flow_run():
        return

    create_markdown_artifact(
        markdown=markdown(result), key=f"eval-{result['run_key']}".lower(),
        description=f"COCO evaluation of run {result['run_key']}",
    )
