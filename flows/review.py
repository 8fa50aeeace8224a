"""The review round trip: a run's rows out to Label Studio / CVAT, corrected labels back as ground truth.

Plain functions, not flows: each reads one snapshot of the tables and writes one file (or one Delta
commit), so there is nothing to orchestrate or retry, and no Prefect server has to start for a file
conversion. The formats live in :mod:`pxflow.pipelines.formats`; the ``ground_truth`` table in
:mod:`pxflow.tasks.ground_truth`. See docs/evaluation.md ("Review round trip").
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pxflow.pipelines import evaluation as ev
from pxflow.pipelines.formats import coco as coco_format
from pxflow.pipelines.formats import cvat, label_studio
from pxflow.pipelines.formats.review import FormatError, ReviewImage, labels_of, review_images
from pxflow.pipelines.io.pages import page_key
from pxflow.tasks.credentials import storage_for
from pxflow.tasks.ground_truth import ground_truth_rows, resolve_uris, write_import
from pxflow.tasks.lake import Lake

from .evaluate import coco_payload, lake_for, load_rows, resolve_run_key

CVAT_FORMATS = ("cvat-images", "coco")
IMPORT_FORMATS = ("label-studio", "cvat", "coco")


def _selected(output: str, run_key: str | None, partition: str | None, limit: int | None,
              s3_block: str | None) -> tuple[Lake, str, list[dict], list[dict], list[ReviewImage]]:
    """The run's rows and the first ``limit`` reviewable images (decoded ones, in URI order)."""
    lake = lake_for(output, s3_block)
    run_key = resolve_run_key(lake, run_key, partition)
    images, objects, _ = load_rows(lake, run_key, partition)
    names = ev.relative_names(r["image_uri"] for r in images)
    return lake, run_key, images, objects, review_images(images, objects, names, limit)


def export_label_studio(output: str, out: str, run_key: str | None = None, limit: int | None = None,
                        image_root: str | None = None, partition: str | None = None,
                        s3_block: str | None = None) -> dict[str, Any]:
    """Write Label Studio tasks with the run's boxes and masks as predictions to ``out``.

    The labeling config the results refer to is written beside it (``<out without .json>.label_config.xml``).
    """
    lake, run_key, _, _, chosen = _selected(output, run_key, partition, limit, s3_block)
    refs = [label_studio.image_ref(image, image_root) for image in chosen]  # a bad --image-root fails before writing
    tasks = [label_studio.task_for(image, ref, run_key) for image, ref in zip(chosen, refs)]
    lake.storage.write_bytes(out, json.dumps(tasks, ensure_ascii=False).encode("utf-8"))
    config = (out[: -len(".json")] if out.endswith(".json") else out) + ".label_config.xml"
    lake.storage.write_bytes(config, label_studio.label_config(labels_of(chosen)).encode("utf-8"))
    return {"run_key": run_key, "format": "label-studio", "out": out, "label_config": config, "tasks": len(tasks),
            "objects": sum(len(i.objects) for i in chosen), "masks": sum(o.rle is not None for i in chosen for o in i.objects)}


def export_cvat(output: str, out: str, run_key: str | None = None, format: str = "cvat-images",
                limit: int | None = None, partition: str | None = None, s3_block: str | None = None) -> dict[str, Any]:
    """Write CVAT for images 1.1 XML (``cvat-images``) or the COCO 1.0 dataset CVAT imports (``coco``) to ``out``."""
    if format not in CVAT_FORMATS:
        raise ValueError(f"format must be one of {CVAT_FORMATS}, got {format!r}")
    lake, run_key, images, objects, chosen = _selected(output, run_key, partition, limit, s3_block)
    if format == "cvat-images":
        payload = cvat.annotations_xml(chosen, labels_of(chosen), name=f"pxflow run {run_key}")
        counts = {"images": len(chosen), "objects": sum(len(i.objects) for i in chosen),
                  "masks": sum(o.rle is not None for i in chosen for o in i.objects)}
    else:  # the export-coco dataset of the same images: one implementation of COCO
        keys = {(image.uri, image.page_index) for image in chosen}  # a PDF page is one image (--limit counts pages)
        dataset, counts = coco_payload([r for r in images if page_key(r) in keys], objects, "dataset")
        payload = json.dumps(dataset, ensure_ascii=False).encode("utf-8")
    lake.storage.write_bytes(out, payload)
    return {"run_key": run_key, "format": format, "out": out, **counts}


def read_review_file(data: bytes, fmt: str) -> tuple[list[ReviewImage], dict[str, int]]:
    """A tool's file (``label-studio`` JSON export, ``cvat`` XML, ``coco`` dataset) -> reviewed images."""
    if fmt == "cvat":
        return cvat.read_annotations(data)
    if fmt not in IMPORT_FORMATS:
        raise ValueError(f"--from must be one of {IMPORT_FORMATS}, got {fmt!r}")
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        raise FormatError(f"not JSON: {exc}") from None
    return label_studio.read_export(parsed) if fmt == "label-studio" else coco_format.read_dataset(parsed)


def import_ground_truth(path: str, fmt: str, output: str, source: str | None = None,
                        s3_block: str | None = None) -> dict[str, Any]:
    """Store a tool's corrected labels as one import of ``<output>/ground_truth`` (one Delta commit).

    The file is read and parsed completely before anything is written: a bad file costs nothing. Images the
    tool knew only by name get the output's matching ``image_uri`` when exactly one matches.
    """
    lake = Lake(output.rstrip("/"), storage_for(s3_block))
    data = lake.storage.read_bytes(path)
    images, counts = read_review_file(data, fmt)
    known = lake.read("images", columns=["image_uri"])
    resolved = resolve_uris(images, set(known.column("image_uri").to_pylist()) if known is not None else ())
    rows = ground_truth_rows(images, source=source or fmt, source_format=fmt, source_file=path,
                             source_version=hashlib.sha256(data).hexdigest())
    version = write_import(lake, rows)
    first = rows.slice(0, 1).to_pylist()[0] if rows.num_rows else {}
    return {"import_id": first.get("import_id"), "source": source or fmt, "format": fmt, "file": path,
            "images": len(images), "objects": sum(len(i.objects) for i in images),
            "masks": sum(o.rle is not None for i in images for o in i.objects),
            "images_with_uri": sum(1 for i in images if i.uri), "resolved_by_name": resolved,
            "ground_truth_version": version, **{k: v for k, v in counts.items() if k not in ("images",)}}
