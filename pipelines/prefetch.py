"""Overlap input loading with inference: an ordered, bounded prefetch over a thread pool.

Decoding (OpenCV) and ONNX Runtime / Paddle release the GIL, so while the
model runs one batch, the pool reads and preprocesses the next ones. The window
bounds memory: at most ``window`` loaded items wait at any time, whatever the
input size.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int = 2, window: int = 8
) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """Yield ``(item, fn(item), None)`` or ``(item, None, error)`` in input order."""
    if workers <= 0:
        for item in items:
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
