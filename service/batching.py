"""Adaptive batching across concurrent requests, at the level of texts, scheduled by cost.

Requests put their tokenized texts in one queue. A single loop takes the next batch, runs it as one
`Predictor.run` call on a dedicated thread and hands each request its results once all its texts are
done. While a batch runs, new requests pile up and form the next batch, so batches grow with load and
a lone request waits for nobody (no fixed delay, except the optional `max_wait_ms` to let a burst
gather). `Predictor.run` then sorts the batch by length and pads each bucket only to its own longest text.

Fair to small requests: every text has an estimated cost (`Predictor.cost_ms`: tokens and attention
values), and a batch holds at most `max_batch_cost` of it, so one large request (19 long texts with all
their maps: over a second of work) is split over several batches instead of holding the worker in one.
Which texts go next is earliest-deadline-first, a request's deadline being its arrival plus SLOWDOWN
times its own cost: a small request that arrives while a large one is being computed goes into the next
batch, and a large one still goes first once it has waited SLOWDOWN times its own cost, so a steady
stream of small requests cannot starve it.

Why not BentoML's `batchable=True` API behind the public one: the public API would call it through
BentoML's in-process HTTP client, so every result (attention maps included) is serialized to JSON,
validated and parsed an extra time, and the inner call takes a second concurrency slot.

The queue is bounded (`max_queue_texts`): a request that would overflow it fails at once with
`Overloaded`, which the service turns into 503 + Retry-After. A `submit` that is cancelled (its client
hung up: service/admission.py cancels the request) takes whatever of its texts no batch has taken yet off
the queue, so nobody computes them; texts already in a running batch are computed and dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# A request waits for smaller ones at most until it has waited this many times its own estimated cost.
SLOWDOWN = 10.0


class Overloaded(Exception):
    """The queue is full; retry later."""


@dataclass
class Timing:
    queue_ms: float  # from submission until the first batch with one of its texts started
    inference_ms: float  # the runs of the batches that carried its texts (forward passes and JSON)
    batch_texts: int  # the most texts, from all requests, that one of those batches held


@dataclass(eq=False)  # identity: the queue removes a cancelled job by `is`
class _Job:
    items: Sequence[Any]
    costs: list[float]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    taken: int = 0  # items[:taken] are in a batch already
    results: list[Any] = field(default_factory=list)
    timing: Timing | None = None

    @property
    def deadline(self) -> float:
        return self.enqueued + SLOWDOWN * sum(self.costs) / 1000


class Batcher:
    """Collects items from concurrent `submit` calls into shared calls of `process(items) -> results`."""

    def __init__(
        self,
        process: Callable[[list[Any]], list[Any]],
        *,
        cost_ms: Callable[[Any], float] = lambda item: 1.0,
        max_batch_cost: float = float("inf"),
        max_batch_texts: int = 64,
        max_queue_texts: int = 1024,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int, int], None] | None = None,
    ):
        self.process = process
        self.cost_ms = cost_ms
        self.max_batch_cost = max_batch_cost
        self.max_batch_texts = max_batch_texts
        self.max_queue_texts = max_queue_texts
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: list[_Job] = []
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
        job = _Job(items, [self.cost_ms(item) for item in items], asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_texts += len(items)
        self._wakeup.set()
        try:
            return await job.future
        except asyncio.CancelledError:
            self.dropped_texts += self._unqueue(job)  # nobody will compute what no batch has taken yet
            raise

    def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._wakeup = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._run_forever())

    def _unqueue(self, job: _Job) -> int:
        """Take `job` off the queue; returns how many of its texts no batch had taken."""
        if job not in self._queue:
            return 0
        self._queue.remove(job)
        left = len(job.items) - job.taken
        self._queued_texts -= left
        return left

    async def _run_forever(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.max_wait_s and self._queued_texts < self.max_batch_texts:
                await asyncio.sleep(self.max_wait_s)
            # A call, so that nothing of the batch (results of MBs, in "all" mode) outlives it here.
            await self._run_batch(self._take())

    async def _run_batch(self, chunks: list[tuple[_Job, int, int]]) -> None:
        if not chunks:  # every waiting job was cancelled during the wait
            return
        items = [item for job, start, end in chunks for item in job.items[start:end]]
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self.process, items)
        except Exception as error:  # one bad batch fails its requests, never the loop
            for job, _, _ in chunks:
                self._unqueue(job)
                if not job.future.done():
                    job.future.set_exception(error)
            return
        inference_ms = (time.perf_counter() - started) * 1000
        if self.on_batch is not None:
            self.on_batch(len(items), len(chunks))
        offset = 0
        for job, start, end in chunks:
            job.results.extend(results[offset : offset + end - start])
            offset += end - start
            if job.timing is None:
                job.timing = Timing((started - job.enqueued) * 1000, 0.0, 0)
            job.timing.inference_ms += inference_ms
            job.timing.batch_texts = max(job.timing.batch_texts, len(items))
            if end == len(job.items) and not job.future.done():  # its last texts (the client may have gone)
                job.future.set_result((job.results, job.timing))

    def _take(self) -> list[tuple[_Job, int, int]]:
        """The next batch as (job, start, end) slices: jobs by deadline, texts until `max_batch_cost` or
        `max_batch_texts` is reached (at least one text); a job that does not fit is split."""
        chunks, cost, texts = [], 0.0, 0
        for job in sorted(self._queue, key=lambda job: job.deadline):
            start = end = job.taken
            while end < len(job.items) and texts < self.max_batch_texts:
                if texts and cost + job.costs[end] > self.max_batch_cost:
                    break
                cost += job.costs[end]
                texts += 1
                end += 1
            if end > start:
                chunks.append((job, start, end))
                job.taken = end
            if end < len(job.items):  # the batch is full
                break
        for job, _, end in chunks:
            if end == len(job.items):
                self._queue.remove(job)
        self._queued_texts -= texts
        return chunks
