"""Dynamic batching across concurrent requests.

Requests arrive one image at a time; the generator, the codec and the cloud are much
cheaper per image in batches (one rANS flush and one HTTP round trip per batch). The
:class:`DynamicBatcher` collects submitted items and hands them to ``process`` as one
batch when either ``max_batch`` items are waiting or the oldest has waited ``max_wait``
seconds, whichever comes first. Up to ``max_concurrent`` batches are processed at once
(so the next batch can be perturbed while the previous one is at the cloud); items
beyond ``max_queue`` waiting are refused at once with :class:`OverloadedError` (back-pressure:
the internal API answers 503 with Retry-After).

``process(items)`` returns one outcome per item, in order: a result, or an exception for
that item alone; if ``process`` itself raises, every item of the batch gets that
exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["BatchConfig", "BatchStats", "DynamicBatcher", "OverloadedError"]

T = TypeVar("T")
R = TypeVar("R")


class OverloadedError(Exception):
    """The batcher's queue is full; retry later."""


@dataclass(frozen=True)
class BatchConfig:
    """Batching parameters (defaults: 32 images, 5 ms, 1024 queued, 2 in flight)."""

    max_batch: int = 32
    max_wait: float = 0.005
    max_queue: int = 1024
    max_concurrent: int = 2

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_concurrent < 1:
            raise ValueError("max_batch, max_queue and max_concurrent must be positive")
        if not 0.0 <= self.max_wait <= 10.0:
            raise ValueError("max_wait must be 0 .. 10 s")


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest: int = 0


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    enqueued: float


class DynamicBatcher(Generic[T, R]):
    """Collects items into batches for ``process`` (see the module docstring)."""

    def __init__(
        self,
        process: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        config: BatchConfig = BatchConfig(),
    ) -> None:
        self._process = process
        self.config = config
        self._queue: list[_Pending[T, R]] = []
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.stats = BatchStats()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Start the collector task (on the running event loop)."""
        if self._runner is None:
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(self.config.max_concurrent)
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        """Stop accepting items, fail the queued ones, wait for batches in flight."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(OverloadedError("the enclave is shutting down"))
        self._queue.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its outcome."""
        if self._closed:
            raise OverloadedError("the enclave is shutting down")
        if self._runner is None:
            self.start()
        if len(self._queue) >= self.config.max_queue:
            raise OverloadedError(f"{len(self._queue)} images already queued")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, future, time.monotonic()))
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        cfg = self.config
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Wait until the batch is full or the oldest item has waited max_wait.
            deadline = self._queue[0].enqueued + cfg.max_wait
            while True:
                self._wakeup.clear()  # before the checks: a later submit sets it again
                remaining = deadline - time.monotonic()
                if len(self._queue) >= cfg.max_batch or remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            await self._slots.acquire()
            batch = [p for p in self._queue[: cfg.max_batch] if not p.future.done()]
            del self._queue[: cfg.max_batch]
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._dispatch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, batch: list[_Pending[T, R]]) -> None:
        assert self._slots is not None
        try:
            self.stats.batches += 1
            self.stats.items += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            try:
                outcomes = await self._process([p.item for p in batch])
                if len(outcomes) != len(batch):
                    raise RuntimeError("the batch function returned the wrong number of outcomes")
            except Exception as exc:
                outcomes = [exc] * len(batch)
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)
        finally:
            self._slots.release()
