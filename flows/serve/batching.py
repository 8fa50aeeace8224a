"""Micro-batching with bounded concurrency per model.

Requests ``submit(key, item)``; items with the same ``key`` (the same per-call options)
may share one model call. A dispatcher hands a batch to one of ``workers`` threads as soon
as a worker is free: everything waiting for that key (at most ``max_batch``) goes in one
call. When a worker is free and other requests are still being read or decoded
(:meth:`announce`), it waits up to ``window_ms`` for them to join; with nobody on the way it
dispatches at once, so a lone request pays no window. At most ``max_queue`` items wait;
beyond that :class:`Overloaded` (the server answers 503).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Hashable, Sequence


class Overloaded(RuntimeError):
    """More requests are waiting for the model than the queue allows."""


class MicroBatcher:
    def __init__(
        self,
        run: Callable[[Hashable, Sequence[Any]], Sequence[Any]],
        *,
        max_batch: int = 8,
        window_ms: float = 5.0,
        workers: int = 1,
        max_queue: int = 256,
        name: str = "model",
    ) -> None:
        self.run = run
        self.max_batch = max(1, int(max_batch))
        self.window_s = max(0.0, float(window_ms)) / 1000.0
        self.workers = max(1, int(workers))
        self.max_queue = max(1, int(max_queue))
        self.name = name
        self._pending: "OrderedDict[Hashable, list[tuple[Any, asyncio.Future]]]" = OrderedDict()
        self._queued = 0
        self._announced = 0
        self._busy = 0
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=f"pxflow-serve-{name}")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        #: (batch size, seconds) of the last calls, for metrics
        self.on_batch: Callable[[int, float], None] | None = None

    # -- stats -----------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return self._queued

    @property
    def busy(self) -> int:
        return self._busy

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._dispatch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- requests ----------------------------------------------------------------------
    def announce(self) -> "_Announcement":
        """``with batcher.announce(): ...decode...; await batcher.submit(...)``: a request on its way."""
        return _Announcement(self)

    async def submit(self, key: Hashable, item: Any) -> Any:
        if self._queued >= self.max_queue:
            raise Overloaded(f"{self.name}: {self._queued} requests already waiting (queue limit {self.max_queue})")
        self.start()
        future = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((item, future))
        self._queued += 1
        self._wake.set()
        return await future

    # -- the dispatcher ------------------------------------------------------------------
    async def _dispatch(self) -> None:
        free = asyncio.Semaphore(self.workers)
        while True:
            if not self._queued:
                self._wake.clear()
                await self._wake.wait()
                continue
            await free.acquire()
            # a worker is free: let requests still being decoded join, for at most one window
            deadline = time.monotonic() + self.window_s
            while self._announced > 0 and self._queued < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            key, waiting = next(iter(self._pending.items()))
            batch, rest = waiting[: self.max_batch], waiting[self.max_batch :]
            if rest:
                self._pending[key] = rest
                self._pending.move_to_end(key)
            else:
                del self._pending[key]
            self._queued -= len(batch)
            batch = [(item, fut) for item, fut in batch if not fut.done()]  # cancelled: client gone
            if not batch:
                free.release()
                continue
            self._busy += 1
            asyncio.get_running_loop().create_task(self._run_batch(key, batch, free))

    async def _run_batch(self, key: Hashable, batch: list, free: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self.run, key, [item for item, _ in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"{self.name}: {len(outputs)} results for {len(batch)} inputs")
            for (_, fut), out in zip(batch, outputs):
                if not fut.done():
                    if isinstance(out, BaseException):
                        fut.set_exception(out)
                    else:
                        fut.set_result(out)
        except BaseException as exc:  # the call failed as a whole: every request of the batch learns why
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
        finally:
            self._busy -= 1
            free.release()
            if self.on_batch is not None:
                try:
                    self.on_batch(len(batch), time.perf_counter() - started)
                except Exception:
                    pass


class _Announcement:
    def __init__(self, batcher: MicroBatcher) -> None:
        self.batcher = batcher
        self.active = False

    def __enter__(self) -> "_Announcement":
        self.batcher._announced += 1
        self.active = True
        return self

    def done(self) -> None:
        """The request is decoded (submitting now) or failed: it no longer holds the window open."""
        if self.active:
            self.active = False
            self.batcher._announced -= 1
            if self.batcher._wake is not None:
                self.batcher._wake.set()

    def __exit__(self, *exc: Any) -> None:
        self.done()
