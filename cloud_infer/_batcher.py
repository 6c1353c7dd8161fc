"""Micro-batching: merge concurrent requests into one call of a blocking batch function.

Jobs are queued on the event loop; a batch is dispatched to a dedicated worker thread
(one at a time, so the model never runs twice concurrently) when

* the queued images reach ``max_batch_images``, or
* ``max_wait_s`` has passed since the first queued job while the worker was idle, or
* the worker finishes the previous batch and jobs are waiting (under load, batches form
  by themselves without any added wait).

The event loop never blocks on inference; each job's future gets its own outcome, so
one job's failure (an exception from the batch function) does not affect the others'
futures except when the whole batch function raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["MicroBatcher", "OverloadedError"]

J = TypeVar("J")
R = TypeVar("R")


class OverloadedError(Exception):
    """More images are pending than the configured bound: the caller should retry later."""


@dataclass
class _Pending(Generic[J, R]):
    job: J
    images: int
    future: asyncio.Future[tuple[R, float]]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[J, R]):
    """Queue jobs and run them in batches on one worker thread.

    ``run_batch(jobs)`` is called in the worker thread and must return one outcome per
    job, in order. :meth:`submit` returns ``(outcome, queue_seconds)``.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[J]], Sequence[R]],
        *,
        max_batch_images: int,
        max_wait_s: float,
        max_pending_images: int,
        thread_name: str = "pmc2-batch",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch_images = max_batch_images
        self._max_wait_s = max_wait_s
        self._max_pending_images = max_pending_images
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._queue: list[_Pending[J, R]] = []
        self._queued_images = 0
        self._pending_images = 0
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def pending_images(self) -> int:
        """Images admitted and not yet answered (queued or running)."""
        return self._pending_images

    async def submit(self, job: J, images: int) -> tuple[R, float]:
        """Queue ``job`` (worth ``images`` images) and wait for its outcome.

        Raises :class:`OverloadedError` without queueing when the pending bound would be
        exceeded (a single job larger than the bound is admitted when nothing is pending).
        Cancelling the caller abandons the outcome, not the batch.
        """
        if self._closed:
            raise OverloadedError("the service is shutting down")
        if self._pending_images and self._pending_images + images > self._max_pending_images:
            raise OverloadedError(f"{self._pending_images} images pending")
        loop = asyncio.get_running_loop()
        pending: _Pending[J, R] = _Pending(job, images, loop.create_future())
        self._queue.append(pending)
        self._queued_images += images
        self._pending_images += images
        try:
            self._schedule(loop)
            return await pending.future
        finally:
            self._pending_images -= images
            if not pending.future.done():
                pending.future.cancel()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._busy or not self._queue:
            return
        if self._queued_images >= self._max_batch_images or self._max_wait_s == 0:
            self._dispatch(loop)
        elif self._timer is None:
            self._timer = loop.call_later(self._max_wait_s, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._busy and self._queue:
            self._dispatch(loop)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch: list[_Pending[J, R]] = []
        images = 0
        while self._queue:
            head = self._queue[0]
            if batch and images + head.images > self._max_batch_images:
                break
            batch.append(self._queue.pop(0))
            images += head.images
        self._queued_images -= images
        live = [p for p in batch if not p.future.done()]
        if not live:
            self._schedule(loop)
            return
        self._busy = True
        started = time.perf_counter()
        if self._on_batch is not None:
            self._on_batch(sum(p.images for p in live))
        work = loop.run_in_executor(self._executor, self._run_batch, [p.job for p in live])

        def finished(done: asyncio.Future[Sequence[R]]) -> None:
            self._busy = False
            error = RuntimeError("batch cancelled") if done.cancelled() else done.exception()
            outcomes = None if error is not None else list(done.result())
            if outcomes is not None and len(outcomes) != len(live):
                error = RuntimeError("the batch function returned the wrong number of outcomes")
            for index, item in enumerate(live):
                if item.future.done():
                    continue
                if error is not None or outcomes is None:
                    item.future.set_exception(error or RuntimeError("batch failed"))
                else:
                    item.future.set_result((outcomes[index], started - item.queued_at))
            self._schedule(loop)

        work.add_done_callback(finished)

    def close(self) -> None:
        """Refuse new jobs and stop the worker after the running batch."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._executor.shutdown(wait=False, cancel_futures=True)
