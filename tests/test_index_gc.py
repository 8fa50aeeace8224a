"""``IndexRepo.gc`` never deletes a live or pinned version (issue 20, items 1 and 5).

gc races real writers (a subprocess, optionally with its clock 2 h behind) on local disk and
on the S3 server; pins are leases gc honours, including across the pin/gc race and a pin
writer whose clock runs behind; a collected version's error says so.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from pxflow.pipelines.io.uri import join_uri
from pxflow.pipelines.retrieval import versions
from pxflow.pipelines.retrieval.versions import (
    CONDEMNED_DIR, IndexRepo, VersionCollected, hold_pin, resolve_index,
)
from tests.test_index_versions import _base, _env, _unit_rows, config, where  # noqa: F401
from tests.support.shitu_models import shitu_models  # noqa: F401

TWO_HOURS = 7200.0

WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    shift = float(sys.argv[4])
    _real = time.time
    time.time = lambda: _real() + shift  # this writer's clock (claims, manifests) is off by `shift`
    import numpy as np
    from pxflow.pipelines.retrieval.versions import IndexRepo
    root, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for k in range(count):
        x = np.random.default_rng(1000 + k).normal(size=(1, 32)).astype(np.float32)
        x /= np.linalg.norm(x)
        m = IndexRepo(root, name).append(x, [f"w{k}"], [{"uri": f"w/{k}.jpg", "etag": "e"}])
        print(m["version"], flush=True)
    """
)


def _assert_loadable(repo: IndexRepo) -> int:
    current = repo.current_version()
    assert current is not None
    return len(repo.load(current))  # raises if CURRENT names a deleted or incomplete version


@pytest.mark.parametrize("shift", [0.0, -TWO_HOURS], ids=["same-clock", "writer-2h-behind"])
def test_gc_keep_1_racing_appends_keeps_current_and_every_update(where, shift):
    """Item 1: gc --keep 1 in a loop while a writer appends 8 times; CURRENT always loads, none is lost."""
    root, _ = where
    repo = _base(root, "race")
    appends = 8
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, root, "race", str(appends), str(shift)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rounds = 0
    deleted: set[str] = set()
    try:
        while proc.poll() is None:
            result = repo.gc(keep=1)  # orphans and old versions go at once: no age is trusted
            deleted.update(result["deleted"])
            _assert_loadable(repo)
            rounds += 1
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert rounds > appends, f"only {rounds} gc rounds ran during the appends"
    published = out.split()
    assert len(published) == appends and not set(published) & deleted - set(published[:-1])
    assert repo.current_version() == published[-1]
    final = repo.load()
    labels = Counter(final.id_map.values())
    assert all(labels[f"w{k}"] == 1 for k in range(appends)) and len(final) == 20 + appends
    assert repo.gc(keep=1)["deleted"] == [] and repo.versions() == [published[-1]]


class _GcUnderWriter(IndexRepo):
    """A writer that, after writing its version, sees another writer publish past it and gc
    (keep 1) delete its directory before it validates: what a writer between claim and publish can meet."""

    raced = False

    def _write_version(self, version, parent, operation, inputs, change):
        manifest = super()._write_version(version, parent, operation, inputs, change)
        if not self.raced:  # written, not yet validated: validation then finds the files gone
            self.raced = True
            other = IndexRepo(self.root, self.name)
            other.append(_unit_rows(1, 32, 77), ["other"], [{"uri": "other.jpg", "etag": "e"}])
            assert version in other.gc(keep=1)["deleted"]  # below CURRENT now: it can never be published
        return manifest


def test_a_writer_whose_directory_gc_removed_retries_on_the_new_current(where):
    root, _ = where
    _base(root, "under")
    writer = _GcUnderWriter(root, "under")
    manifest = writer.append(_unit_rows(1, 32, 78), ["mine"], [{"uri": "mine.jpg", "etag": "e"}])
    repo = IndexRepo(root, "under")
    assert repo.current_version() == manifest["version"] == "v000004"  # v2 lost, v3 other, v4 redone on v3
    assert Counter(repo.load().id_map.values())["other"] == 1 and Counter(repo.load().id_map.values())["mine"] == 1


def _published(root: str, name: str, extra: int) -> IndexRepo:
    repo = _base(root, name)
    for k in range(extra):
        repo.append(_unit_rows(1, 32, 50 + k), [f"a{k}"], [{"uri": f"a{k}.jpg", "etag": "e"}])
    return repo


def test_a_pinned_version_survives_gc_and_a_collected_one_says_so(where):
    """Item 5: a pin lease keeps its version through gc --keep 1; once released, gc collects it and
    readers are told it was collected, not that it was never published."""
    root, _ = where
    repo = _published(root, "pinned", 0)
    spec, lease = hold_pin(f"{repo.base}", ttl_s=60)
    assert spec == f"{repo.base}@v000001" and lease is not None
    for k in range(3):
        repo.append(_unit_rows(1, 32, 60 + k), [f"b{k}"], [{"uri": f"b{k}.jpg", "etag": "e"}])
    result = repo.gc(keep=1)
    assert result["deleted"] == ["v000002", "v000003"] and result["pinned"] == ["v000001"]
    resolved, _, version = resolve_index(spec)
    assert version == "v000001" and resolved
    assert len(IndexRepo(root, "pinned").load("v000001")) == 20
    lease.release()
    assert repo.pins() == {}
    assert repo.gc(keep=1)["deleted"] == ["v000001"]
    with pytest.raises(VersionCollected, match="v000001 was published and then collected by gc"):
        resolve_index(spec)
    with pytest.raises(VersionCollected, match="collected by gc"):
        repo.rollback("v000001")
    with pytest.raises(VersionCollected, match="collected by gc"):
        repo.pin("v000001")
    assert repo.pins() == {}  # the refused pin was taken back


def test_a_pin_written_with_a_clock_2h_behind_still_holds(where, monkeypatch):
    """The lease's end is the later of the writer's `expires` and the store's last-modified + ttl."""
    root, _ = where
    repo = _published(root, "skew", 2)
    real = time.time
    monkeypatch.setattr(versions.time, "time", lambda: real() - TWO_HOURS)
    pin = repo.pin("v000001", ttl_s=600)
    monkeypatch.setattr(versions.time, "time", real)
    assert repo.gc(keep=1)["deleted"] == ["v000002"] and "v000001" in repo.versions()
    assert repo.storage.exists(pin)  # not cleaned up as expired either
    repo.unpin(pin)
    lapsed = repo.pin("v000001", ttl_s=-1)  # expired by both clocks: gc ignores it and removes it
    assert repo.gc(keep=1)["deleted"] == ["v000001"] and not repo.storage.exists(lapsed)


class _ReaderPinsDuringGc(IndexRepo):
    """gc with a reader pinning the version it is collecting at a chosen point: before gc's
    mark (``after_first_look``) or between the mark and gc's second look at the pins."""

    def __init__(self, *args, when: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.when, self.looks, self.reader_error, self.reader_pin = when, 0, None, None

    def pins(self, now=None, version=None):
        if version == "v000001":
            self.looks += 1
            if (self.when == "before_mark" and self.looks == 1) or (self.when == "after_mark" and self.looks == 2):
                try:
                    self.reader_pin = IndexRepo(self.root, self.name).pin("v000001", ttl_s=60)
                except VersionCollected as exc:
                    self.reader_error = exc
        return super().pins(now, version)


@pytest.mark.parametrize("when", ["before_mark", "after_mark"])
def test_the_pin_gc_race_either_keeps_the_version_or_refuses_the_pin(tmp_path, when):
    repo = _published(str(tmp_path), "pinrace", 1)
    gc = _ReaderPinsDuringGc(repo.root, repo.name, when=when)
    result = gc.gc(keep=1)
    marks = join_uri(repo.base, CONDEMNED_DIR, "v000001")
    if when == "before_mark":  # gc's first look missed the pin, its look after the mark sees it
        assert gc.reader_error is None and result["pinned"] == ["v000001"] and result["deleted"] == []
        assert len(repo.load("v000001")) == 20 and not list(repo.storage.list_objects(marks))
        assert list(repo.pins()) == ["v000001"]
    else:  # the reader saw gc's mark and took its pin back; gc then collected the version
        assert isinstance(gc.reader_error, VersionCollected) and gc.reader_pin is None
        assert result["deleted"] == ["v000001"] and repo.pins() == {}
        assert len(list(repo.storage.list_objects(marks))) == 1 and repo.condemned("v000001")["published"]


def test_an_annotate_job_holds_a_pin_on_its_version_for_the_whole_run(where, config, monkeypatch):
    """The flow's lease (``lease_index`` on the job ``prepare_job`` pinned): gc keeps the version the
    job reads while it runs; the renewals keep it past the first ttl; release lets gc collect it."""
    from pxflow.flows.annotate_run import _leased_plan
    from pxflow.flows.options import AnnotateOptions

    root, _ = where
    repo = _published(root, "annot", 0)
    monkeypatch.setattr(versions, "PIN_TTL_S", 3.0)  # the lease the flow takes, renewed every second
    options = AnnotateOptions(pipeline=config, predict_kwargs={"index": repo.base, "rec_threshold": 0.0})
    plan, lease = _leased_plan(join_uri(root, "_out"), options, None)
    job = plan.job
    assert job.index_spec == f"{repo.base}@v000001" and lease is not None
    try:
        repo.append(_unit_rows(1, 32, 90), ["late"], [{"uri": "late.jpg", "etag": "e"}])
        time.sleep(4.0)  # past the first ttl: only the renewals keep the pin alive
        assert repo.gc(keep=1)["pinned"] == ["v000001"]
        assert resolve_index(job.index_spec)[2] == "v000001"
    finally:
        lease.release()
    assert repo.gc(keep=1)["deleted"] == ["v000001"]
