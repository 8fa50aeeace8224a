"""Versioned PP-ShiTu indexes under an index root (local folder or ``s3://`` prefix).

Layout::

    <root>/<name>/CURRENT            the published version's name ("v000003"), moved by compare-and-swap
    <root>/<name>/v000003/           immutable once published
        _claim.json                  written first, with If-None-Match: who allocated this number, when
        vector.index, id_map.yaml, index_info.yaml, pxflow_index.json    PaddleX-compatible (IndexData.save)
        manifest.json                written last: structure, metric, dim, search params, model,
                                     ntotal, next_id, label counts, parent, file checksums, created_at,
                                     flow_run_id, operation + inputs, consumed gallery entries
    <root>/<name>/_pins/<version>.<uuid>.json     {"version", "expires", "ttl_s", "holder"}: a reader's lease
    <root>/<name>/_condemned/<version>/<uuid>.json    written by a gc before it deletes a version (and
                                                      left as the record that gc collected it)

A writer (:meth:`IndexRepo.commit`) loads CURRENT (data + etag), applies its operation to
that version, claims a fresh version number (``If-None-Match``), writes the whole version
directory, re-loads and validates it (:func:`validate_version`), and only then moves CURRENT
with ``If-Match: <etag it loaded>``. A writer that loses the race deletes its directory,
reloads CURRENT and redoes its operation on top of the winner, so no update is ever lost.
A crash at any point leaves CURRENT on a complete, validated version; the directory it was
writing is an orphan that nothing references and :meth:`IndexRepo.gc` removes once CURRENT
has moved past its number (until then it may be a writer still at work).

Every published version's ``parent`` is the version CURRENT held when it was published
(compare-and-swap guarantees it), so the published history is the parent chain from
CURRENT; anything off that chain is an orphan. Rollback publishes a *new* version whose
files are those of the target (same vectors, ids and labels, so the same search results)
with ``next_id`` kept at the newest value: ids are never reused.

Readers pin a version with :func:`resolve_index` (``root/name`` resolves CURRENT once,
``root/name@v000003`` names one, a plain PaddleX folder is itself); remote versions are
cached locally by version (published versions never change, so a cached copy never goes
stale). A batch reader that must keep its version for a whole run holds a :class:`PinLease`
(:func:`hold_pin`), which gc honours; see :meth:`IndexRepo.gc` for why gc cannot delete a
live or pinned version.

Crash points (:mod:`pxflow.pipelines.hooks`): ``index_mid_upload`` (in the middle of writing a version) and
``index_after_upload`` (after writing it, before moving CURRENT), where the crash tests SIGKILL a writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import logging
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..hooks import armed, checkpoint
from ..io.errors import InputError
from ..io.storage import PreconditionFailed, Storage, default_storage
from ..io.stores.local import LocalStore
from ..io.uri import is_remote, join_uri
from .builder import append_index, build_index, remove_index
from .index_data import ID_MAP_FILE, INDEX_INFO_FILE, META_FILE, VECTOR_FILE, IndexData, IndexFormatError, stored_ids, stored_vectors

CURRENT_FILE = "CURRENT"
MANIFEST_FILE = "manifest.json"
CLAIM_FILE = "_claim.json"
#: written into a version once CURRENT has pointed at it (gc tells published versions from orphans
#: even after it removed the ancestors that linked them to CURRENT)
PUBLISHED_FILE = "_published.json"
PINS_DIR = "_pins"
#: gc's mark on a version it is about to delete; it stays after the deletion as the record of it
CONDEMNED_DIR = "_condemned"
MANIFEST_FORMAT = 1
VERSION_RE = re.compile(r"^v(\d{6})$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
INDEX_FILES = (VECTOR_FILE, ID_MAP_FILE, INDEX_INFO_FILE, META_FILE)
#: how many stored vectors validation searches for themselves
VALIDATION_SAMPLE = 64
#: a reader's pin lease (renewed every third of it while the reader runs, so a dead reader's pin lapses)
PIN_TTL_S = 600.0

log = logging.getLogger(__name__)


class VersionError(ValueError):
    """A versioned-index request that cannot be served (unknown name or version, bad layout)."""


class VersionCollected(VersionError):
    """The version was deleted (or is being deleted) by gc: it cannot be read or pinned any more."""


class NothingToChange(ValueError):
    """The operation would not change the index (removing ids or labels it does not hold): no version is made."""


class ValidationError(IndexFormatError):
    """A freshly written version failed validation; CURRENT was not moved."""


class CommitConflict(RuntimeError):
    """A writer lost the compare-and-swap more times than it was allowed to retry."""


def version_name(number: int) -> str:
    return f"v{int(number):06d}"


def version_number(version: str) -> int:
    m = VERSION_RE.match(version or "")
    if not m:
        raise VersionError(f"not a version name: {version!r} (expected v000001, v000002, ...)")
    return int(m.group(1))


def check_name(name: str) -> str:
    if not NAME_RE.match(name or "") or name.startswith("_"):
        raise VersionError(f"index name must match {NAME_RE.pattern} (and not start with '_'), got {name!r}")
    return name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _flow_run_id() -> str | None:
    """The Prefect flow run id, when a flow set it for this process (pipelines never import Prefect)."""
    return os.environ.get("PXFLOW_FLOW_RUN_ID") or None


@dataclass
class Change:
    """What an operation produced from the current version: the new index and its bookkeeping."""

    data: IndexData
    #: gallery entries the version holds: [{"uri", "etag", "id", "label"}]
    consumed: list[dict[str, Any]]
    inputs: dict[str, Any] = field(default_factory=dict)
    #: keep next_id at least this (rollback never lets ids be reused)
    min_next_id: int = 0


Operation = Callable[["IndexData | None", "dict[str, Any] | None"], Change]


class IndexRepo:
    """The versions of one named index under ``root``."""

    def __init__(self, root: str, name: str, storage: Storage | None = None, flow_run_id: str | None = None) -> None:
        #: recorded in manifests, claims and pins (the Prefect flow run that wrote them)
        self.flow_run_id = flow_run_id or _flow_run_id()
        self.root = str(root).rstrip("/") if is_remote(str(root)) else os.path.abspath(os.path.expanduser(str(root)))
        self.name = check_name(name)
        self.storage = storage or default_storage()
        self.base = join_uri(self.root, self.name)

    def __repr__(self) -> str:
        return f"IndexRepo({self.root!r}, {self.name!r})"

    # -- locations --------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        return join_uri(self.base, *parts)

    def version_dir(self, version: str) -> str:
        version_number(version)
        return self.uri(version)

    # -- reads ------------------------------------------------------------------------
    def current(self) -> tuple[str | None, str | None]:
        """``(version, etag)`` of CURRENT, ``(None, None)`` when nothing is published yet."""
        data, etag = self.storage.read_for_update(self.uri(CURRENT_FILE))
        if data is None:
            return None, None
        version = data.decode("utf-8").strip()
        version_number(version)
        return version, etag

    def current_version(self) -> str | None:
        return self.current()[0]

    def require_current(self) -> str:
        version = self.current_version()
        if version is None:
            raise VersionError(f"{self.base}: no published version (no {CURRENT_FILE}); run `pxflow index build` first")
        return version

    def versions(self) -> list[str]:
        """Every version directory (published or not), oldest first."""
        names = [n for n in self.storage.list_children(self.base) if VERSION_RE.match(n)]
        # some S3 servers (SeaweedFS) keep an emptied "folder" listed as a common prefix
        return sorted((n for n in names if self.storage.is_dir(self.uri(n))), key=version_number)

    def manifest(self, version: str) -> dict[str, Any]:
        uri = join_uri(self.version_dir(version), MANIFEST_FILE)
        try:
            return json.loads(self.storage.read_bytes(uri))
        except InputError as exc:
            if exc.error_type == "not_found":
                raise VersionError(f"{self.base}: version {version} does not exist or is incomplete (no {MANIFEST_FILE})") from None
            raise

    def load(self, version: str | None = None) -> IndexData:
        """The index of ``version`` (default: CURRENT)."""
        version = version or self.require_current()
        return IndexData.load(self.version_dir(version), storage=self.storage)

    def _loaded(self, version: str) -> IndexData:
        """``version``'s index for a writer: the one this repo object just published and validated
        when it is that version (published versions are immutable, and operations never modify
        their input), else read from storage."""
        last = getattr(self, "_last", None)
        if last is not None and last[0] == version:
            return last[1]
        return self.load(version)

    def is_published(self, version: str) -> bool:
        """Did CURRENT ever point at ``version`` (and is it still there)?"""
        if not self.storage.exists(join_uri(self.version_dir(version), MANIFEST_FILE)):
            return False
        return self.storage.exists(join_uri(self.version_dir(version), PUBLISHED_FILE)) or version in self.history()

    def history(self, limit: int | None = None, current: str | None = None) -> list[str]:
        """The published versions, newest (CURRENT) first: the parent chain from CURRENT
        (from ``current`` when given; at most ``limit`` of them)."""
        out: list[str] = []
        version = current or self.current_version()
        seen: set[str] = set()
        while version and version not in seen and (limit is None or len(out) < limit):
            seen.add(version)
            try:
                manifest = self.manifest(version)
            except VersionError:
                break  # an ancestor removed by gc ends the chain
            out.append(version)
            version = manifest.get("parent")
        return out

    def list(self) -> list[dict[str, Any]]:
        """One summary per published version, oldest first (``list --json``)."""
        current = self.current_version()
        rows = []
        for version in reversed(self.history()):
            m = self.manifest(version)
            rows.append(
                {
                    "version": version,
                    "ntotal": m["ntotal"],
                    "live": m["live"],
                    "labels": len(m["labels"]),
                    "parent": m.get("parent"),
                    "operation": m["operation"],
                    "created": m["created_at"],
                    "current": version == current,
                }
            )
        return rows

    # -- writes -----------------------------------------------------------------------
    def commit(self, operation: str, apply: Operation, inputs: dict[str, Any] | None = None, *, max_attempts: int = 50) -> dict[str, Any]:
        """Apply ``apply(current data, current manifest)`` and publish it as a new version.

        Loses no update: on a lost compare-and-swap the operation is redone on the winner's
        version. Raises :class:`NothingToChange` (from ``apply``) without writing anything.
        Returns the published manifest.
        """
        last_error: Exception | None = None
        for attempt in range(max_attempts):
            parent, etag = self.current()
            version: str | None = None
            try:
                data = self._loaded(parent) if parent else None
                manifest = self.manifest(parent) if parent else None
                change = apply(data, manifest)
                version = self._claim()
                new_manifest = self._write_version(version, parent, operation, {**(inputs or {}), **change.inputs}, change)
                checkpoint("index_after_upload")
                published = validate_version(self, version)
                self._publish(version, etag)
                self._last = (version, published)
                return new_manifest
            except Exception as exc:
                if version is not None:
                    self._discard(version)
                # CURRENT moved on: this attempt is lost, whatever broke it. Once CURRENT is past our
                # number gc may delete our directory (or the parent we read) under us; that is a lost
                # race like a failed compare-and-swap, redone on the winner's version.
                if not isinstance(exc, PreconditionFailed) and self.current()[1] == etag:
                    raise
                last_error = exc
                time.sleep(min(0.05 * (attempt + 1), 0.5) * (0.5 + np.random.random()))
            except BaseException:
                if version is not None:
                    self._discard(version)
                raise
        raise CommitConflict(f"{self.base}: gave up after {max_attempts} lost compare-and-swaps ({last_error})")

    def _claim(self) -> str:
        """Allocate a fresh version number: the claim file is created only if it does not exist."""
        # every number ever listed (an emptied S3 "folder" included) and CURRENT's: a number is never
        # handed out twice while a trace of it remains, and never at or below the published one
        listed = [version_number(n) for n in self.storage.list_children(self.base) if VERSION_RE.match(n)]
        current = self.current_version()
        number = max([0, *listed, version_number(current) if current else 0]) + 1
        while True:
            version = version_name(number)
            claim = {"version": version, "writer": uuid.uuid4().hex, "pid": os.getpid(), "created_at": time.time(),
                     "flow_run_id": self.flow_run_id}
            try:
                self.storage.write_bytes_if(join_uri(self.uri(version), CLAIM_FILE), json.dumps(claim).encode(), if_none_match=True)
                return version
            except PreconditionFailed:
                number += 1

    def _write_version(
        self, version: str, parent: str | None, operation: str, inputs: dict[str, Any], change: Change
    ) -> dict[str, Any]:
        data = change.data
        if change.min_next_id > data.meta.next_id:
            data.meta.next_id = int(change.min_next_id)
        directory = self.version_dir(version)
        if armed("index_mid_upload"):  # a crash test: die with the vectors written and the rest not
            self.storage.write_bytes(join_uri(directory, VECTOR_FILE), data.index_bytes)
            checkpoint("index_mid_upload")
        data.save(directory, storage=self.storage)
        files = {name: data.file_checksums[name] for name in INDEX_FILES}
        manifest = build_manifest(self.name, version, parent, operation, inputs, data, change.consumed, files, self.flow_run_id)
        self.storage.write_bytes(join_uri(directory, MANIFEST_FILE), json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
        return manifest

    def _publish(self, version: str, etag: str | None) -> None:
        uri = self.uri(CURRENT_FILE)
        payload = (version + "\n").encode()
        try:
            if etag is None:
                self.storage.write_bytes_if(uri, payload, if_none_match=True)
            else:
                self.storage.write_bytes_if(uri, payload, if_match=etag)
        except PreconditionFailed:
            # a retried PUT whose first attempt did succeed answers 412 too: check before giving up
            if self.current_version() != version:
                raise
        try:  # best effort: history() still finds it through CURRENT's parent chain
            body = {"version": version, "published_at": time.time(), "flow_run_id": self.flow_run_id}
            self.storage.write_bytes(join_uri(self.uri(version), PUBLISHED_FILE), json.dumps(body).encode())
        except Exception:
            pass

    def _discard(self, version: str) -> None:
        """Best effort: remove a version directory this writer made and did not publish."""
        try:
            if self.current_version() != version:
                self._delete_version(version)
        except Exception:
            pass  # gc removes it later

    def _delete_version(self, version: str) -> None:
        directory = self.version_dir(version)
        store = self.storage.store_for(directory)
        if isinstance(store, LocalStore):
            shutil.rmtree(store.parse(directory).path, ignore_errors=True)
            return
        for info in list(self.storage.list_objects(directory)):
            self.storage.delete(info.uri)
        self.storage.delete(join_uri(directory, CLAIM_FILE))
        self.storage.delete(join_uri(directory, PUBLISHED_FILE))

    # -- operations ---------------------------------------------------------------------
    def build(
        self,
        features: np.ndarray,
        labels: Sequence[str],
        entries: Sequence[dict[str, Any]],
        index_type: str = "HNSW32",
        metric_type: str = "IP",
        model: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new index of ``features`` (one row per entry of ``entries``: ``{"uri", "etag", "label"}``)."""

        def apply(current: IndexData | None, manifest: dict | None) -> Change:
            data = build_index(features, labels, index_type, metric_type, model=model)
            consumed = [{**dict(e), "id": i, "label": str(lab)} for i, (e, lab) in enumerate(zip(entries, labels))]
            floor = int(manifest["next_id"]) if manifest else 0
            if floor:  # ids are never reused across versions of one name
                data = _shift_ids(data, floor)
                for c in consumed:
                    c["id"] += floor
            return Change(data, consumed, {"index_type": index_type, "metric_type": metric_type, "count": len(labels)})

        return self.commit("build", apply, inputs)

    def append(
        self, features: np.ndarray, labels: Sequence[str], entries: Sequence[dict[str, Any]], inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        def apply(current: IndexData | None, manifest: dict | None) -> Change:
            if current is None:
                raise VersionError(f"{self.base}: nothing to append to; build the index first")
            check_model(current, manifest, (inputs or {}).get("model"))
            return append_change(current, manifest, features, labels, entries)

        return self.commit("append", apply, {**(inputs or {}), "count": len(labels)})

    def remove(self, ids: Iterable[int] | None = None, labels: Sequence[str] | None = None, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        wanted_ids = sorted({int(i) for i in ids or ()})
        wanted_labels = sorted({str(v) for v in labels or ()})
        if not wanted_ids and not wanted_labels:
            raise NothingToChange("give ids and/or labels to remove")

        def apply(current: IndexData | None, manifest: dict | None) -> Change:
            if current is None:
                raise VersionError(f"{self.base}: nothing to remove from; build the index first")
            unknown_ids = [i for i in wanted_ids if i not in current.id_map]
            unknown_labels = [v for v in wanted_labels if v not in set(current.id_map.values())]
            if unknown_ids or unknown_labels:
                what = []
                if unknown_ids:
                    what.append(f"ids {unknown_ids}")
                if unknown_labels:
                    what.append(f"labels {unknown_labels}")
                raise NothingToChange(
                    f"{self.base}: {' and '.join(what)} not in the current version {manifest['version']}; nothing removed, no new version"
                )
            return remove_change(current, manifest, wanted_ids, wanted_labels)

        return self.commit("remove", apply, {**(inputs or {}), "ids": wanted_ids, "labels": wanted_labels})

    def rollback(self, version: str, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Publish a new version with exactly ``version``'s vectors, ids and labels."""
        self.check_readable(version)
        target_manifest = self.manifest(version)
        target = self.load(version)

        def apply(current: IndexData | None, manifest: dict | None) -> Change:
            floor = int(manifest["next_id"]) if manifest else 0
            return Change(_copy(target), list(target_manifest.get("consumed") or []), {"version": version}, min_next_id=floor)

        return self.commit("rollback", apply, inputs)

    def apply(self, operation: str, apply: Operation, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Any other operation (``refresh``): :meth:`commit` under another name."""
        return self.commit(operation, apply, inputs)

    # -- pins and gc ------------------------------------------------------------------
    def pin(self, version: str, ttl_s: float = PIN_TTL_S, holder: str | None = None) -> str:
        """Keep ``version`` from gc for ``ttl_s`` seconds; returns the pin's URI for :meth:`renew` / :meth:`unpin`.

        The pin is written first, then the version is checked: a gc that condemned it before it
        could see this pin has left its mark, and we back off (:class:`VersionCollected`) instead of
        holding a pin on a version being deleted. Either gc sees the pin, or the pin sees gc's mark.
        """
        version_number(version)
        uri = self.uri(PINS_DIR, f"{version}.{uuid.uuid4().hex}.json")
        self._write_pin(uri, version, ttl_s, holder)
        try:
            self.check_readable(version)
        except BaseException:
            self.unpin(uri)
            raise
        return uri

    def renew(self, pin_uri: str, version: str, ttl_s: float = PIN_TTL_S, holder: str | None = None) -> None:
        """Extend a pin: the same object rewritten with a new expiry (and a new storage modified time)."""
        self._write_pin(pin_uri, version, ttl_s, holder)

    def _write_pin(self, uri: str, version: str, ttl_s: float, holder: str | None) -> None:
        body = {"version": version, "expires": time.time() + float(ttl_s), "ttl_s": float(ttl_s),
                "holder": holder or self.flow_run_id, "pid": os.getpid()}
        self.storage.write_bytes(uri, json.dumps(body).encode())

    def unpin(self, pin_uri: str) -> None:
        self.storage.delete(pin_uri)

    def pins(self, now: float | None = None, version: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Unexpired pins by version (of ``version`` only, when given); see :func:`pin_expiry`."""
        now = time.time() if now is None else now
        out: dict[str, list[dict[str, Any]]] = {}
        for info, body in self._pin_files(version):
            if pin_expiry(body, info) > now:
                out.setdefault(str(body.get("version") or info.uri.rsplit("/", 1)[-1].split(".", 1)[0]), []).append({**body, "uri": info.uri})
        return out

    def _pin_files(self, version: str | None = None) -> Iterable[tuple[Any, dict[str, Any]]]:
        """``(ObjectInfo, body)`` of each pin file (of ``version``); an unreadable body is ``{}``
        (kept as a pin by :func:`pin_expiry`: unknown is not expired); a file gone meanwhile is skipped."""
        for info in list(self.storage.list_objects(self.uri(PINS_DIR), suffixes=[".json"])):
            if version is not None and not info.uri.rsplit("/", 1)[-1].startswith(version + "."):
                continue
            try:
                body = json.loads(self.storage.read_bytes(info.uri))
            except InputError as exc:
                if exc.error_type == "not_found":
                    continue
                body = {}
            except ValueError:
                body = {}
            yield info, body if isinstance(body, dict) else {}

    def condemned(self, version: str) -> dict[str, Any] | None:
        """A gc's mark on ``version`` (it is being, or was, collected), or None.

        One mark per gc run (``_condemned/<version>/<uuid>.json``): a gc that backs off removes
        only its own, never one another gc is relying on."""
        for info in self.storage.list_objects(self.uri(CONDEMNED_DIR, version), suffixes=[".json"]):
            try:
                return json.loads(self.storage.read_bytes(info.uri))
            except InputError as exc:
                if exc.error_type != "not_found":
                    raise
            except ValueError:
                return {"version": version}
        return None

    def check_readable(self, version: str) -> None:
        """Raise unless ``version`` is published and not collected (or being collected) by gc."""
        mark = self.condemned(version)
        if mark is not None:
            what = "published" if mark.get("published", True) else "never published (an abandoned write)"
            raise VersionCollected(f"{self.base}: version {version} was {what} and then collected by gc "
                                   f"(versions: {', '.join(self.history()[::-1]) or 'none'})")
        if not self.is_published(version):
            raise VersionError(f"{self.base}: version {version} was never published (versions: {', '.join(self.history()[::-1]) or 'none'})")

    def gc(self, keep: int = 5) -> dict[str, Any]:
        """Delete the published versions beyond the newest ``keep`` and the orphans CURRENT has passed.

        Cannot delete a live or pinned version, whatever runs meanwhile and whatever the clocks say:

        - CURRENT (and the newest ``keep`` of its history) is re-read before each deletion, and
          nothing numbered at or above the newest CURRENT seen is touched. A writer claims a number
          above the CURRENT it read, and publishing is a compare-and-swap on CURRENT's etag, which
          can never come back once CURRENT moved (numbers only grow): a version below CURRENT can
          never be published any more, one above may be a writer at work. No timestamp is read.
        - Pins: gc first writes ``_condemned/<version>/<uuid>.json``, then re-reads that version's pins and
          deletes only if none is live (else it removes its mark). :meth:`pin` writes its pin and
          then looks for the mark, so a reader either is seen or sees gc. The mark stays after the
          deletion: readers of a collected version are told so.

        Returns ``{"deleted", "kept", "pinned", "in_progress", "current"}``.
        """
        keep = max(1, int(keep))
        deleted: list[str] = []
        pinned: list[str] = []
        current: str | None = None
        for version in self.versions():
            current, kept = self._keep_set(keep)  # re-read: CURRENT may have moved since the listing
            if current is None or version_number(version) >= version_number(current) or version in kept:
                continue
            if self.pins(version=version):
                pinned.append(version)
                continue
            published = self.storage.exists(join_uri(self.uri(version), PUBLISHED_FILE)) or version in self.history(current=current)
            mark = self.uri(CONDEMNED_DIR, version, f"{uuid.uuid4().hex}.json")
            self.storage.write_bytes(mark, json.dumps({"version": version, "published": published, "current": current,
                                                       "flow_run_id": self.flow_run_id}).encode())
            if self.pins(version=version):  # a reader pinned it before it could see the mark
                self.storage.delete(mark)
                pinned.append(version)
                continue
            self._delete_version(version)
            deleted.append(version)
        current, kept = self._keep_set(keep)
        remaining = self.versions()
        above = [v for v in remaining if current is None or version_number(v) > version_number(current)]
        in_progress = [v for v in above if not self.storage.exists(join_uri(self.uri(v), PUBLISHED_FILE))]
        now = time.time()
        for info, body in self._pin_files():
            if pin_expiry(body, info) <= now:
                self.storage.delete(info.uri)
        return {"deleted": deleted, "kept": remaining, "pinned": pinned, "in_progress": in_progress, "current": current}

    def _keep_set(self, keep: int) -> tuple[str | None, set[str]]:
        """CURRENT now and the newest ``keep`` versions of its history."""
        current = self.current_version()
        return current, set(self.history(limit=keep, current=current)) if current else set()


def pin_expiry(body: dict[str, Any], info: Any) -> float:
    """When a pin lapses: the later of its body's ``expires`` (the pin writer's clock) and the
    storage's last-modified time + ``ttl_s`` (the store's clock), so a writer whose clock runs
    behind cannot have its lease dropped early. A pin whose body cannot be read never lapses
    (unknown is not expired; ``unpin`` or an operator removes it)."""
    try:
        expires = float(body["expires"])
        modified = getattr(info, "modified", None)
        if modified is not None and body.get("ttl_s") is not None:
            expires = max(expires, float(modified) + float(body["ttl_s"]))
        return expires
    except (KeyError, TypeError, ValueError):
        return float("inf")


class PinLease:
    """A reader's pin on one version, renewed in the background until :meth:`release`.

    A run holds one for as long as it reads the version; if the process dies, renewals stop
    and the pin lapses after ``ttl_s`` (gc then may collect the version).
    """

    def __init__(self, repo: IndexRepo, version: str, ttl_s: float | None = None, holder: str | None = None) -> None:
        self.repo, self.version, self.holder = repo, version, holder
        self.ttl_s = float(PIN_TTL_S if ttl_s is None else ttl_s)
        self.uri = repo.pin(version, self.ttl_s, holder)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"pxflow-pin-{version}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.repo.renew(self.uri, self.version, self.ttl_s, self.holder)
            except Exception as exc:  # the next renewal may succeed; the lease still has 2/3 of its time
                log.warning("renewing the pin on %s/%s failed: %s", self.repo.base, self.version, exc)

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            self.repo.unpin(self.uri)
        except Exception as exc:  # it lapses by itself
            log.warning("removing the pin %s failed: %s", self.uri, exc)

    def __enter__(self) -> "PinLease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ---------------------------------------------------------------- operations on IndexData

def _copy(data: IndexData) -> IndexData:
    import faiss

    clone = faiss.deserialize_index(faiss.serialize_index(data.index))
    from .index_data import IndexMeta

    return IndexData(clone, data.index_info, IndexMeta.from_dict(dict(vars(data.meta))))


def _shift_ids(data: IndexData, offset: int) -> IndexData:
    """The same index with every id moved up by ``offset`` (a rebuild continues the name's id sequence)."""
    import faiss

    from .index_data import IndexMeta

    clone = faiss.deserialize_index(faiss.serialize_index(data.index))
    idmap = faiss.downcast_index(clone)
    ids = stored_ids(clone) + int(offset)
    faiss.copy_array_to_vector(ids.astype(np.int64), idmap.id_map)
    idmap.construct_rev_map() if hasattr(idmap, "construct_rev_map") else None
    meta = IndexMeta.from_dict(dict(vars(data.meta)))
    meta.next_id = int(meta.next_id) + int(offset)
    info = {**data.index_info, "id_map": {k + int(offset): v for k, v in data.id_map.items()}}
    return IndexData(clone, info, meta)


def check_model(current: IndexData, manifest: dict | None, model: dict[str, Any] | None) -> None:
    """Appending features of another model to an index would make its matches meaningless."""
    recorded = (manifest or {}).get("model", {}).get("sha256") or (current.meta.model or {}).get("sha256")
    if model and recorded and model.get("sha256") and model["sha256"] != recorded:
        raise VersionError(
            f"the index was built with recognition model {recorded[:12]}, these features come from {model['sha256'][:12]}: "
            "rebuild the index with this model instead of appending"
        )


def append_change(
    current: IndexData, manifest: dict | None, features: np.ndarray, labels: Sequence[str], entries: Sequence[dict[str, Any]]
) -> Change:
    start = int(current.meta.next_id)
    data = append_index(np.asarray(features, np.float32).reshape(-1, current.dim), labels, current)
    consumed = list((manifest or {}).get("consumed") or [])
    consumed += [{**dict(e), "id": start + i, "label": str(lab)} for i, (e, lab) in enumerate(zip(entries, labels))]
    return Change(data, consumed, {})


def remove_change(current: IndexData, manifest: dict | None, ids: Sequence[int], labels: Sequence[str]) -> Change:
    data = remove_index(list(ids), current, labels=list(labels) or None)
    live = set(data.id_map)
    consumed = [c for c in (manifest or {}).get("consumed") or [] if int(c["id"]) in live]
    return Change(data, consumed, {"removed": len(current) - len(data)})


# ---------------------------------------------------------------- manifest and validation

def build_manifest(
    name: str, version: str, parent: str | None, operation: str, inputs: dict[str, Any], data: IndexData,
    consumed: list[dict[str, Any]], files: dict[str, str], flow_run_id: str | None = None,
) -> dict[str, Any]:
    meta = data.meta
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "parent": parent,
        "created_at": time.time(),
        "flow_run_id": flow_run_id,
        "operation": operation,
        "inputs": _jsonable(inputs),
        "structure": meta.structure,
        "index_type": data.index_type,
        "metric_type": data.metric_type,
        "dim": data.dim,
        "nprobe": meta.nprobe,
        "ef_search": meta.ef_search,
        "model": dict(meta.model or {}),
        "ntotal": int(data.index.ntotal),
        "live": len(data),
        "tombstones": len(meta.tombstones),
        "next_id": int(meta.next_id),
        "labels": dict(sorted(Counter(data.id_map.values()).items())),
        "files": files,
        "consumed": consumed,
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def validate_version(repo: IndexRepo, version: str, sample: int = VALIDATION_SAMPLE) -> IndexData:
    """Re-read ``version`` from storage and check it can serve searches; :class:`ValidationError` if not.

    Checks: the files' checksums against the manifest; ``ntotal`` and the live count; that
    ``id_map.yaml``'s ids are the ids stored in the index; the label counts; the consumed
    entries' ids; and that a sample of stored vectors find themselves as the top-1 hit.
    """
    directory = repo.version_dir(version)
    where = f"{repo.base}/{version}"
    try:
        manifest = repo.manifest(version)
        files = manifest["files"]
        # pxflow_index.json is checked here; it records the other two files' checksums, which
        # IndexData.load checks against the bytes it reads: every file is read once
        meta_bytes = repo.storage.read_bytes(join_uri(directory, META_FILE))
        if _sha256(meta_bytes) != files[META_FILE]:
            raise ValidationError(f"{where}/{META_FILE}: checksum differs from {MANIFEST_FILE}")
        recorded = json.loads(meta_bytes).get("checksums") or {}
        for name in (VECTOR_FILE, ID_MAP_FILE):
            if recorded.get(name) != files[name]:
                raise ValidationError(f"{where}/{name}: checksum differs from {MANIFEST_FILE}")
        if INDEX_INFO_FILE in files:  # load reads id_map.yaml, so the documents' copy is checked here (older versions lack it)
            if _sha256(repo.storage.read_bytes(join_uri(directory, INDEX_INFO_FILE))) != files[INDEX_INFO_FILE]:
                raise ValidationError(f"{where}/{INDEX_INFO_FILE}: checksum differs from {MANIFEST_FILE}")
        data = IndexData.load(directory, storage=repo.storage)
    except ValidationError:
        raise
    except (IndexFormatError, VersionError, InputError) as exc:
        raise ValidationError(f"{where}: {exc}") from None
    if int(data.index.ntotal) != manifest["ntotal"] or len(data) != manifest["live"]:
        raise ValidationError(f"{where}: {data.index.ntotal} vectors / {len(data)} live, manifest says {manifest['ntotal']} / {manifest['live']}")
    if dict(Counter(data.id_map.values())) != manifest["labels"]:
        raise ValidationError(f"{where}: label counts differ from {MANIFEST_FILE}")
    consumed_ids = [int(c["id"]) for c in manifest.get("consumed") or []]
    if len(set(consumed_ids)) != len(consumed_ids) or not set(consumed_ids) <= set(data.id_map):
        raise ValidationError(f"{where}: consumed gallery entries name ids the index does not hold")
    if int(manifest["next_id"]) <= max(data.id_map, default=-1):
        raise ValidationError(f"{where}: next_id {manifest['next_id']} would reuse ids")
    self_search(data, sample, where)
    return data


def self_search(data: IndexData, sample: int = VALIDATION_SAMPLE, where: str = "index") -> None:
    """A sample of stored vectors must find themselves first (ties with identical vectors allowed)."""
    if not len(data):
        return
    ids = stored_ids(data.index)
    vectors = stored_vectors(data.index)
    live = np.isin(ids, np.fromiter(data.id_map, np.int64, len(data.id_map)))
    ids, vectors = ids[live], vectors[live]
    rng = np.random.default_rng(len(ids))
    pick = rng.choice(len(ids), size=min(sample, len(ids)), replace=False)
    k = min(10, len(ids))
    queries = vectors[pick]
    scores, hits = data.search(queries, k)
    # inner products of vectors that are not unit length can rank a longer neighbour first:
    # then the vector must still be found with its own score |v|^2
    unit = data.metric_type == "L2" or bool(np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-3))
    for query, want, row_scores, row_hits in zip(queries, ids[pick].tolist(), scores, hits):
        found = np.nonzero(row_hits == want)[0]
        best = float(row_scores[0]) if unit else (0.0 if data.metric_type == "L2" else float(query @ query))
        if not len(found) or abs(float(row_scores[found[0]]) - best) > 1e-4 * max(1.0, abs(best)):
            raise ValidationError(f"{where}: stored vector {want} does not find itself as the top hit (got {row_hits[:3].tolist()})")


# ---------------------------------------------------------------- readers: resolve a spec to one version

def default_cache_dir() -> str:
    return os.environ.get("PXFLOW_INDEX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pxflow", "indexes")


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"root/name@v000003"`` -> ``("root/name", "v000003")``; no ``@``: ``(spec, None)``."""
    text = str(spec).rstrip("/")
    head, sep, tail = text.rpartition("@")
    if sep and VERSION_RE.match(tail) and "/" not in tail:
        return head, tail
    return text, None


def is_versioned(spec: str, storage: Storage | None = None) -> bool:
    """True when ``spec`` names a versioned index (``root/name`` with a CURRENT, or ``root/name@vNNNNNN``)."""
    base, version = split_spec(spec)
    if version:
        return True
    return (storage or default_storage()).exists(join_uri(base, CURRENT_FILE))


def resolve_index(
    spec: Any, storage: Storage | None = None, cache_dir: str | None = None
) -> tuple[Any, str | None, str | None]:
    """``(resolved_dir, name, version)`` for an index spec; CURRENT is read exactly once.

    - ``root/name`` (a folder with ``CURRENT``): the version CURRENT names now;
    - ``root/name@v000003``: that version;
    - a plain PaddleX/pxflow index folder (or ``.../name/v000003``): itself, ``(dir, None, None)``;
    - an ``IndexData`` object: returned as is, ``(obj, None, None)``.

    Remote versions are downloaded once into ``cache_dir`` (default ``~/.cache/pxflow/indexes``,
    ``PXFLOW_INDEX_CACHE``), keyed by root, name and version, and the local copy is returned: a
    published version never changes, so later resolutions of that version download nothing.
    The returned directory ends in ``<name>/<version>``, so rows get ``index_name``/``index_version``.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return spec, None, None
    storage = storage or default_storage()
    base, version = split_spec(os.fspath(spec))
    if version is None:
        if not storage.exists(join_uri(base, CURRENT_FILE)):
            return os.fspath(spec), None, None
    root, _, name = base.rstrip("/").rpartition("/")
    repo = IndexRepo(root or ".", name, storage)
    if version is None:
        version = repo.require_current()
    directory = repo.version_dir(version)
    repo.check_readable(version)
    if not is_remote(directory):
        return directory, name, version
    return _cached_copy(repo, version, cache_dir or default_cache_dir()), name, version


def _cached_copy(repo: IndexRepo, version: str, cache_dir: str) -> str:
    key = hashlib.sha256(repo.root.encode()).hexdigest()[:16]
    target = os.path.join(cache_dir, key, repo.name, version)
    manifest_path = os.path.join(target, MANIFEST_FILE)
    if os.path.isfile(manifest_path):
        return target
    manifest = repo.manifest(version)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=os.path.dirname(target))
    try:
        for name, digest in manifest["files"].items():
            data = repo.storage.read_bytes(join_uri(repo.version_dir(version), name))
            if _sha256(data) != digest:
                raise IndexFormatError(f"{repo.base}/{version}/{name}: checksum differs from {MANIFEST_FILE}")
            with open(os.path.join(staging, name), "wb") as f:
                f.write(data)
        with open(os.path.join(staging, MANIFEST_FILE), "w", encoding="utf-8") as f:
            json.dump(manifest, f, ensure_ascii=False)
        try:
            os.rename(staging, target)
        except OSError:  # another process cached it first: same immutable content
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_index(spec: Any, storage: Storage | None = None, cache_dir: str | None = None) -> tuple[IndexData, str, str | None, str | None]:
    """``(IndexData, resolved_dir, name, version)`` for a spec (see :func:`resolve_index`)."""
    resolved, name, version = resolve_index(spec, storage, cache_dir)
    return IndexData.load(resolved), resolved, name, version


def pin_spec(spec: Any, storage: Storage | None = None) -> Any:
    """The spec pinned to one version: ``root/name`` -> ``root/name@v000003`` (CURRENT read once now).

    Anything else (``@vNNNNNN`` already, a plain folder, an ``IndexData``, None) is returned
    unchanged. A batch run resolves its index spec once with this and passes the result to
    every shard, so all its rows come from one version even if CURRENT moves meanwhile.
    """
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip() or str(spec).strip() in ("None", "null"):
        return spec
    base, version = split_spec(os.fspath(spec))
    if version is not None:
        return os.fspath(spec)
    storage = storage or default_storage()
    if not storage.exists(join_uri(base, CURRENT_FILE)):
        return os.fspath(spec)
    root, _, name = base.rstrip("/").rpartition("/")
    return f"{base}@{IndexRepo(root or '.', name, storage).require_current()}"


def hold_pin(spec: Any, storage: Storage | None = None, ttl_s: float | None = None, holder: str | None = None,
             attempts: int = 5) -> tuple[Any, PinLease | None]:
    """``(pinned spec, lease)``: :func:`pin_spec` plus a :class:`PinLease` on that version, which gc
    honours until the caller releases it (or its process dies and the lease lapses).

    A moving spec (``root/name``) whose version gc condemned between reading CURRENT and pinning
    (CURRENT moved on meanwhile) is resolved again; a named version (``@vNNNNNN``) that gc
    collected raises :class:`VersionCollected`. Anything that is not a versioned index gets no lease.
    """
    moving = isinstance(spec, (str, os.PathLike)) and split_spec(os.fspath(spec))[1] is None
    for attempt in range(max(1, attempts)):
        pinned = pin_spec(spec, storage)
        if not isinstance(pinned, str):
            return pinned, None
        base, version = split_spec(pinned)
        if version is None:
            return pinned, None
        root, _, name = base.rstrip("/").rpartition("/")
        try:
            return pinned, PinLease(IndexRepo(root or ".", name, storage or default_storage()), version, ttl_s, holder)
        except VersionCollected:
            if not moving or attempt + 1 >= attempts:
                raise
    raise AssertionError("unreachable")


def refresh_change(
    current: IndexData | None,
    manifest: dict | None,
    entries: Sequence[dict[str, Any]],
    features: dict[tuple[str, str], Any],
) -> Change:
    """The gallery's changes since ``manifest``: images added (or whose etag changed) are appended,
    images gone (or changed) are removed. ``entries``: the gallery now (``{"uri", "etag", "label"}``;
    etag None = missing); ``features``: ``{(uri, etag): vector}`` for (at least) the added ones.
    Raises :class:`NothingToChange` when the gallery is as the current version consumed it.
    """
    if current is None or manifest is None:
        raise VersionError("nothing to refresh: build the index first")
    consumed = {c["uri"]: c for c in manifest.get("consumed") or []}
    now = {e["uri"]: e for e in entries if e.get("etag") is not None}
    removed_ids = sorted(int(c["id"]) for uri, c in consumed.items() if uri not in now or now[uri]["etag"] != c.get("etag"))
    added = [e for uri, e in now.items() if uri not in consumed or consumed[uri].get("etag") != e["etag"]]
    added = [e for e in added if (e["uri"], e["etag"]) in features]
    if not removed_ids and not added:
        raise NothingToChange(f"{manifest['name']}: the gallery is unchanged since {manifest['version']}; no new version")
    data, kept = current, list(manifest.get("consumed") or [])
    if removed_ids:
        removal = remove_change(current, manifest, removed_ids, [])
        data, kept = removal.data, removal.consumed
    if added:
        appended = append_change(
            data, {"consumed": kept},
            np.asarray([features[(e["uri"], e["etag"])] for e in added], np.float32),
            [e["label"] for e in added], [{"uri": e["uri"], "etag": e["etag"]} for e in added],
        )
        data, kept = appended.data, appended.consumed
    return Change(data, kept, {"added": len(added), "removed": len(removed_ids)})
