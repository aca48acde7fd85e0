"""Adaptive batching across concurrent requests, at the level of texts.

Requests put their tokenized texts in one queue. A single loop takes everything waiting (up to
`max_batch_texts`, whole requests only), runs it as one `Predictor.run` call on a dedicated thread
and hands each request its own results. While a batch runs, new requests pile up and form the next
batch, so batches grow with load and a lone request waits for nobody (no fixed delay, except the
optional `max_wait_ms` to let a burst gather). `Predictor.run` then sorts the batch by length and
pads each bucket only to its own longest text.

Why not BentoML's `batchable=True` API behind the public one: the public API would call it through
BentoML's in-process HTTP client, so every result (attention maps included) is serialized to JSON,
validated and parsed an extra time, and the inner call takes a second concurrency slot. Measured on
this 2-core machine with the tiny test model, 50 concurrent "cls" requests: see the README's Serving
section for the numbers.

The queue is bounded (`max_queue_texts`): a request that would overflow it fails at once with
`Overloaded`, which the service turns into 503 + Retry-After. A `submit` that is cancelled (its client
hung up: service/http.py cancels the request) takes its job off the queue if no batch has taken it yet,
so nobody computes it; a job already in a running batch is computed and its results dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class Overloaded(Exception):
    """The queue is full; retry later."""


@dataclass
class Timing:
    queue_ms: float  # from submission until the request's batch started
    inference_ms: float  # the batch's run (forward passes and post-processing)
    batch_texts: int  # how many texts, from all requests, shared that batch


@dataclass(eq=False)  # identity: the queue removes a cancelled job by `is`
class _Job:
    items: Sequence[Any]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    started: bool = False  # taken into a batch


class Batcher:
    """Collects items from concurrent `submit` calls into shared calls of `process(items) -> results`."""

    def __init__(
        self,
        process: Callable[[list[Any]], list[Any]],
        *,
        max_batch_texts: int = 64,
        max_queue_texts: int = 1024,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int, int], None] | None = None,
    ):
        self.process = process
        self.max_batch_texts = max_batch_texts
        self.max_queue_texts = max_queue_texts
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._queued_texts = 0
        self.dropped_texts = 0  # texts taken off the queue unrun because their request was cancelled
        self._wakeup: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gaze-batch")

    async def submit(self, items: Sequence[Any]) -> tuple[list[Any], Timing]:
        """Queue `items` (one request's texts); returns their results, in order, and the timing."""
        if self._queued_texts + len(items) > self.max_queue_texts:
            raise Overloaded(
                f"the queue holds {self._queued_texts} texts; {len(items)} more would pass its limit of "
                f"{self.max_queue_texts}"
            )
        self._ensure_loop()
        job = _Job(items, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_texts += len(items)
        self._wakeup.set()
        try:
            return await job.future
        except asyncio.CancelledError:
            if not job.started:  # still waiting: nobody will compute it
                self._queue.remove(job)
                self._queued_texts -= len(items)
                self.dropped_texts += len(items)
            raise

    def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._wakeup = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._run_forever())

    async def _run_forever(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.max_wait_s and self._queued_texts < self.max_batch_texts:
                await asyncio.sleep(self.max_wait_s)
            # A call, so that nothing of the batch (results of MBs, in "all" mode) outlives it here.
            await self._run_batch(self._take())

    async def _run_batch(self, jobs: list[_Job]) -> None:
        if not jobs:  # every waiting job was cancelled during the wait
            return
        items = [item for job in jobs for item in job.items]
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self.process, items)
        except Exception as error:  # one bad batch fails its requests, never the loop
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        inference_ms = (time.perf_counter() - started) * 1000
        if self.on_batch is not None:
            self.on_batch(len(items), len(jobs))
        start = 0
        for job in jobs:
            end = start + len(job.items)
            timing = Timing((started - job.enqueued) * 1000, inference_ms, len(items))
            if not job.future.done():  # the client may have gone away
                job.future.set_result((results[start:end], timing))
            start = end

    def _take(self) -> list[_Job]:
        """Whole jobs from the front of the queue, up to `max_batch_texts` texts (at least one job)."""
        jobs, count = [], 0
        while self._queue and (not jobs or count + len(self._queue[0].items) <= self.max_batch_texts):
            job = self._queue.popleft()
            job.started = True
            jobs.append(job)
            count += len(job.items)
        self._queued_texts -= count
        return jobs
