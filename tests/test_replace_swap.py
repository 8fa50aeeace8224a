"""``--replace`` swaps two tables with two Delta commits: a SIGKILL between them must not leave them disagreeing.

The kill is real (``PXFLOW_KILL_AT=between_replace_swaps``, :mod:`tests.support.faults`) and hits the
``pxflow annotate --replace`` command a user runs. To make the two tables' halves tell apart, the replaced
input's content changes under the same content tag (same size, same mtime: what ``--replace`` exists for,
since incremental planning cannot see it), so the old and new ``num_objects`` differ.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

from pxflow.flows.annotate import annotate
from pxflow.flows.options import AnnotateOptions
from tests.conftest import COCO_MINI, PICODET_ONNX, ROOT
from tests.support.annotate_helpers import read_table
from tests.support.faults import kill_env
from tests.test_export_eval import PXFLOW, cli_env

PARTITION = "dt=2024-01-01"


def _consistency(out: Path) -> tuple[dict[str, int], Counter]:
    """``image_uri -> num_objects`` of the images rows (one per input asserted) and the objects rows per image."""
    images = read_table(str(out / "images")).to_pylist()
    uris = [r["image_uri"] for r in images]
    assert len(uris) == len(set(uris)), "an input has two images rows"
    objects = read_table(str(out / "objects")).to_pylist()
    keys = [(o["image_uri"], o["object_index"]) for o in objects]
    assert len(keys) == len(set(keys)), "an object row is duplicated"
    return {r["image_uri"]: r["num_objects"] for r in images}, Counter(o["image_uri"] for o in objects)


def test_a_kill_between_the_replace_swaps_is_finished_by_a_plain_rerun(prefect_server, tmp_path, shared_dir):
    images = sorted((COCO_MINI / "images").iterdir())
    before, after = images[1], images[0]  # 3 and 11 objects at threshold 0.3
    size = max(before.stat().st_size, after.stat().st_size)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    changing = src / "changing.jpg"
    changing.write_bytes(before.read_bytes().ljust(size, b"\0"))  # bytes after the JPEG's end are ignored
    for path in images[2:4]:
        shutil.copy(path, src / path.name)
    options = AnnotateOptions(model_dir=str(PICODET_ONNX), threshold=0.3, shard_size=1)
    assert annotate(input=str(src), output=str(out), options=options, partition=PARTITION)["complete"]
    old_counts, _ = _consistency(out)

    stat = changing.stat()  # new content, same size and mtime: the same content tag
    changing.write_bytes(after.read_bytes().ljust(size, b"\0"))
    os.utime(changing, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    killed = subprocess.run(
        [PXFLOW, "annotate", "--input", str(src), "--output", str(out), "--partition", PARTITION, "--replace",
         "--model-dir", str(PICODET_ONNX), "--threshold", "0.3", "--shard-size", "1", "--no-progress"],
        cwd=ROOT, env={**cli_env(prefect_server), **kill_env("between_replace_swaps")},
        capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    counts, objects = _consistency(out)
    assert objects[str(changing)] != counts[str(changing)] == old_counts[str(changing)]  # killed mid-swap: halves

    rerun = annotate(input=str(src), output=str(out), options=options, partition=PARTITION)
    assert rerun["complete"] and rerun["images_inferred"] == 0  # nothing to infer: the swap is finished instead
    counts, objects = _consistency(out)
    assert counts == {uri: objects[uri] for uri in counts} and len(counts) == 3
    assert counts[str(changing)] != old_counts[str(changing)]  # the replace's rows, in both tables
    assert not list((out / "_staging").iterdir())  # the finished swap's staging is gone
