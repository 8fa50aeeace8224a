"""Overlap input loading with inference: an ordered, bounded prefetch over a thread pool.

Decoding (OpenCV) and ONNX Runtime / Paddle release the GIL, so while the
model runs one batch, the pool reads and preprocesses the next ones. The window
bounds how many loaded items wait at any time; :class:`PixelBudget` bounds what
they weigh.

Pixels in flight
----------------
A window of 8 small JPEGs is nothing, a window of 8 PNGs of 13000 x 13000 is
4 GB of BGR. So every ``predict()`` call reserves each input's width x height
from one process-wide :func:`pixel_budget` (all calls in a process share it:
several shard tasks on threads of one worker) after reading its header and
*before* decoding it, and gives it back once that input's result has been
yielded (or its load failed). The limit is ``PXFLOW_MAX_PIXELS_IN_FLIGHT``
(default 200 M pixels, about 600 MB of decoded BGR; ``0`` turns it off), read
when each ``predict()`` call starts.

Reservations are granted in input order within a call. The budget may be
exceeded only where waiting could never end: an image larger than the whole
budget (it then runs alone, nothing else of its call is admitted beside it), or
a batch (times ``infer_workers``) that needs more than the budget; and only for
the input a call's consumer is waiting for, when no other call holding pixels
can make progress (every such call is itself waiting for the budget, or has
been suspended at a ``yield`` for :data:`STALL_GRACE_S`, e.g. two ``predict()``
generators zipped in one thread). Arrays given by the caller and PDF pages are
counted once loaded (their size is unknown before), unless the caller says it
already holds them in the budget (``predict(..., admitted=True)``: ``pxflow serve``
admits each request's pixels with :func:`admit`, from the image headers, before it
decodes them, and must not count them twice).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int = 2,
    window: int = 8,
    on_wait: Callable[[T], None] | None = None,
) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """Yield ``(item, fn(item), None)`` or ``(item, None, error)`` in input order.

    ``on_wait(item)`` is called (in the consumer's thread) just before blocking on an item's
    result that is not ready yet: how the pixel budget learns which input a call needs now.
    """
    if workers <= 0:
        for item in items:
            if on_wait is not None:
                on_wait(item)  # run inline: the consumer waits for this very item
            try:
                yield item, fn(item), None
            except Exception as exc:  # the caller turns it into an error result
                yield item, None, exc
        return
    pending: deque[tuple[T, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pxflow-load") as pool:
        iterator = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < max(1, window):
                try:
                    item = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((item, pool.submit(fn, item)))
            if not pending:
                return
            item, future = pending.popleft()
            if on_wait is not None and not future.done():
                on_wait(item)
            try:
                yield item, future.result(), None
            except Exception as exc:
                yield item, None, exc


def batched(iterable: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items."""
    batch: list[T] = []
    for item in iterable:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------- pixels in flight

#: the default of ``PXFLOW_MAX_PIXELS_IN_FLIGHT``: 200 M pixels, about 600 MB of decoded BGR
DEFAULT_MAX_PIXELS_IN_FLIGHT = 200_000_000
#: how long a needed input waits for calls suspended at a ``yield`` before it may exceed the budget
STALL_GRACE_S = 2.0


def max_pixels_in_flight() -> int | None:
    """``PXFLOW_MAX_PIXELS_IN_FLIGHT`` now (None: no limit, when set to 0 or below)."""
    value = os.environ.get("PXFLOW_MAX_PIXELS_IN_FLIGHT")
    if not value:
        return DEFAULT_MAX_PIXELS_IN_FLIGHT
    try:
        limit = int(float(value))
    except ValueError:
        raise ValueError(f"PXFLOW_MAX_PIXELS_IN_FLIGHT must be a number of pixels (0: no limit), got {value!r}") from None
    return limit if limit > 0 else None


class BudgetClosed(RuntimeError):
    """A reservation of a ``predict()`` call that has ended (its generator was closed or failed)."""


class BudgetTimeout(TimeoutError):
    """No room in the budget within the caller's bounded wait (:meth:`Reservation.acquire` with a timeout)."""


class PixelBudget:
    """Decoded pixels in flight across every ``predict()`` call of the process; see the module docstring.

    Instrumented for tests and monitoring: :attr:`in_flight`, :attr:`peak` (since
    :meth:`reset_peak`), :attr:`overflows` (grants beyond the limit) and :meth:`add_observer`.
    """

    def __init__(self, limit: int | None = DEFAULT_MAX_PIXELS_IN_FLIGHT) -> None:
        self.limit = limit
        self._cond = threading.Condition(threading.Lock())
        self._sessions: set[BudgetSession] = set()
        self._waiting: list[Reservation] = []  # urgent (needed-now) reservations not yet granted, oldest first
        self._last_progress = time.monotonic()
        self._observers: list[Callable[[str, int, int], None]] = []
        self.in_flight = 0
        self.peak = 0
        self.overflows = 0

    # -- instrumentation ----------------------------------------------------------------------
    def reset_peak(self) -> None:
        with self._cond:
            self.peak = self.in_flight
            self.overflows = 0

    def add_observer(self, callback: Callable[[str, int, int], None]) -> Callable[[], None]:
        """``callback(event, pixels, in_flight)`` on each ``"grant"``/``"release"``, under the budget's lock
        (keep it cheap); returns a function that removes it."""
        with self._cond:
            self._observers.append(callback)

        def remove() -> None:
            with self._cond:
                if callback in self._observers:
                    self._observers.remove(callback)

        return remove

    def _notify(self, event: str, pixels: int) -> None:
        for callback in list(self._observers):
            callback(event, pixels, self.in_flight)

    # -- sessions -----------------------------------------------------------------------------
    def session(self, limit: int | None = None) -> "BudgetSession":
        """A new ``predict()`` call's view of the budget; ``limit`` (if given) becomes the process's limit."""
        with self._cond:
            if limit is not None:
                self.limit = limit if limit > 0 else None
            session = BudgetSession(self)
            self._sessions.add(session)
            return session

    # -- the grant rule (called with the lock held) ---------------------------------------------
    def _fits(self, pixels: int) -> bool:
        return self.limit is None or self.in_flight == 0 or self.in_flight + pixels <= self.limit

    def _may_overflow(self, res: "Reservation") -> bool:
        """The oldest needed-now reservation, when no other call holding pixels can progress without it."""
        candidates = [r for r in self._waiting if r.session._turn == r.seq]
        if not candidates or candidates[0] is not res:
            return False
        stalled = time.monotonic() - self._last_progress >= STALL_GRACE_S
        for other in self._sessions:
            if other is res.session or other.held == 0:
                continue
            if any(r.session is other for r in self._waiting):
                continue  # waiting for the budget itself
            if not (other.suspended and stalled):
                return False  # it is running (or only briefly suspended): it will give pixels back
        return True

    def _grant(self, res: "Reservation", pixels: int) -> None:
        if pixels and self.limit is not None and self.in_flight + pixels > self.limit and self.in_flight:
            self.overflows += 1
        res.pixels = pixels
        res.granted = True
        res.session.held += pixels
        res.session._advance(res.seq)
        self.in_flight += pixels
        self.peak = max(self.peak, self.in_flight)
        self._last_progress = time.monotonic()
        self._notify("grant", pixels)
        self._cond.notify_all()


class BudgetSession:
    """One ``predict()`` call: its reservations are granted in input order; :meth:`close` gives all back."""

    def __init__(self, budget: PixelBudget) -> None:
        self.budget = budget
        self.held = 0
        self.suspended = False
        self.closed = False
        self._seq = itertools.count()
        self._turn = 0  # the next sequence number that may be granted
        self._done: set[int] = set()
        self._open: set[Reservation] = set()

    def reserve(self) -> "Reservation":
        """A place in line for the next input (call in input order, in the consumer's thread)."""
        res = Reservation(self, next(self._seq))
        with self.budget._cond:
            self._open.add(res)
        return res

    def set_suspended(self, suspended: bool) -> None:
        """Mark the call as suspended at a ``yield`` (its caller has the result) or running again."""
        with self.budget._cond:
            self.suspended = suspended
            self.budget._cond.notify_all()

    def _advance(self, seq: int) -> None:  # lock held
        self._done.add(seq)
        while self._turn in self._done:
            self._done.discard(self._turn)
            self._turn += 1

    def close(self) -> None:
        """Give back every reservation and wake (and fail) the call's waiting loads."""
        budget = self.budget
        with budget._cond:
            if self.closed:
                return
            self.closed = True
            for res in list(self._open):
                res._release_locked()
            budget._sessions.discard(self)
            budget._cond.notify_all()


class Reservation:
    """One input's pixels: :meth:`acquire` blocks until granted, :meth:`release` gives them back."""

    __slots__ = ("session", "seq", "pixels", "granted", "released", "urgent", "__weakref__")

    def __init__(self, session: BudgetSession, seq: int) -> None:
        self.session = session
        self.seq = seq
        self.pixels = 0
        self.granted = False
        self.released = False
        self.urgent = False

    def mark_urgent(self) -> None:
        """The call's consumer now waits for this input: it may exceed the budget if nothing else can move."""
        budget = self.session.budget
        with budget._cond:
            if not self.urgent:
                self.urgent = True
                budget._cond.notify_all()

    def acquire(self, pixels: int, timeout: float | None = None) -> None:
        """Wait for this input's turn and for room for ``pixels``; raises :class:`BudgetClosed` if the call ended.

        ``timeout`` (seconds; 0: try once) bounds the wait with :class:`BudgetTimeout`: a server
        answers "busy" rather than queueing without end. Zero pixels (an input its caller already
        holds in the budget) never wait: they cannot push the budget over.
        """
        session, budget = self.session, self.session.budget
        pixels = max(0, int(pixels))
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with budget._cond:
            if self.granted:
                return
            if pixels == 0 and not (session.closed or self.released):
                budget._grant(self, 0)
                return
            queued = False
            try:
                while True:
                    if session.closed or self.released:
                        raise BudgetClosed("the predict() call ended before this input was admitted")
                    if session._turn == self.seq:
                        # needed-now inputs of other calls go first; then anything that fits; else see _may_overflow
                        others_need = any(r.session is not session and r.session._turn == r.seq for r in budget._waiting)
                        if (budget._fits(pixels) and (self.urgent or not others_need)) or (
                            queued and budget._may_overflow(self)
                        ):
                            budget._grant(self, pixels)
                            return
                    if self.urgent and not queued:
                        budget._waiting.append(self)
                        queued = True
                        budget._cond.notify_all()
                        continue
                    wait = STALL_GRACE_S / 4
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            raise BudgetTimeout(f"no room for {pixels} pixels within {timeout:g} s "
                                                f"({budget.in_flight} of {budget.limit} in flight)")
                    budget._cond.wait(timeout=wait)
            finally:
                if queued:
                    budget._waiting.remove(self)
                    budget._cond.notify_all()

    def release(self) -> None:
        """Give the pixels back (idempotent); a reservation never granted gives up its place in line."""
        budget = self.session.budget
        with budget._cond:
            self._release_locked()

    def _release_locked(self) -> None:
        if self.released:
            return
        budget, session = self.session.budget, self.session
        self.released = True
        session._open.discard(self)
        if self.granted:
            session.held -= self.pixels
            budget.in_flight -= self.pixels
            budget._notify("release", self.pixels)
        else:
            session._advance(self.seq)
        budget._last_progress = time.monotonic()
        budget._cond.notify_all()


_BUDGET = PixelBudget()


def pixel_budget() -> PixelBudget:
    """The process-wide budget every ``predict()`` call shares."""
    return _BUDGET


def admit(pixels: int, limit: int | None, timeout: float = 0.0) -> BudgetSession:
    """Hold ``pixels`` of the process budget outside any ``predict()`` call, waiting at most ``timeout``.

    For callers that size their inputs from the headers themselves and decode them before
    calling ``predict(..., admitted=True)`` (``pxflow serve``). The reservation is not urgent:
    it never exceeds the budget (except, as any input, when nothing else is in flight), so a
    caller that must stay under the limit refuses inputs larger than it first. ``limit``
    becomes the process's limit, as a ``predict()`` call's does. Close the returned session
    to give the pixels back; on :class:`BudgetTimeout` nothing is held.
    """
    session = _BUDGET.session(limit or 0)
    try:
        session.reserve().acquire(pixels, timeout=timeout)
    except BaseException:
        session.close()
        raise
    return session
