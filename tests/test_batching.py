"""The Batcher's scheduling (service/batching.py): large requests are split by cost, small ones go first,
and a large one is not starved. Each test drives a real Batcher whose batches wait on a gate, so the
order of batches is observed, not timed."""

from __future__ import annotations

import asyncio
import threading

from service import batching
from service.batching import Batcher


class GatedProcess:
    """A `process` that records each batch and blocks until the test lets it finish."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.gate = threading.Semaphore(0)

    def __call__(self, items):
        self.batches.append([name for name, _ in items])
        assert self.gate.acquire(timeout=10), "the test never released this batch"
        return [f"result of {name}" for name, _ in items]


def batcher_for(process: GatedProcess, **settings) -> Batcher:
    return Batcher(process, cost_ms=lambda item: item[1], **settings)


async def settle() -> None:
    await asyncio.sleep(0.05)  # lets the batch loop take the next batch


def test_a_large_request_is_split_and_a_small_one_slips_in_between():
    process = GatedProcess()

    async def scenario():
        batcher = batcher_for(process, max_batch_cost=100)
        large = asyncio.ensure_future(batcher.submit([(f"L{i}", 60) for i in range(5)]))
        await settle()  # L0 runs alone: L0 + L1 would cost 120
        small = asyncio.ensure_future(batcher.submit([("s", 1)]))
        await settle()
        process.gate.release()  # L0 done; the next batch takes the small request first
        await settle()
        assert small.done() is False and process.batches[-1] == ["s", "L1"]
        for _ in range(4):
            process.gate.release()
            await settle()
        results = [await small, await large]
        batcher.close()
        return results

    (small, small_timing), (large, large_timing) = asyncio.run(scenario())
    assert process.batches == [["L0"], ["s", "L1"], ["L2"], ["L3"], ["L4"]]
    assert small == ["result of s"]
    assert large == [f"result of L{i}" for i in range(5)]  # in order, though computed in four batches
    assert small_timing.batch_texts == 2 and large_timing.batch_texts == 2


def test_a_large_request_that_has_waited_long_enough_goes_before_new_small_ones(monkeypatch):
    monkeypatch.setattr(batching, "SLOWDOWN", 1.0)  # the large one's deadline: 120 ms after it arrived
    process = GatedProcess()

    async def scenario():
        batcher = batcher_for(process, max_batch_cost=100)
        first = asyncio.ensure_future(batcher.submit([("busy", 1)]))  # holds the batch thread
        await settle()
        large = asyncio.ensure_future(batcher.submit([("L0", 60), ("L1", 60)]))
        await asyncio.sleep(0.2)  # past the large request's deadline
        small = asyncio.ensure_future(batcher.submit([("s", 50)]))  # deadline: 50 ms from now
        await settle()
        for _ in range(4):
            process.gate.release()
            await settle()
        results = await asyncio.gather(first, large, small)
        batcher.close()
        return results

    asyncio.run(scenario())
    assert process.batches == [["busy"], ["L0"], ["L1"], ["s"]]


def test_a_cancelled_request_loses_the_texts_no_batch_has_taken():
    process = GatedProcess()

    async def scenario():
        batcher = batcher_for(process, max_batch_cost=100)
        large = asyncio.ensure_future(batcher.submit([(f"L{i}", 60) for i in range(4)]))
        await settle()
        large.cancel()  # the client hung up while L0 was running
        await settle()
        process.gate.release()
        await settle()
        dropped, queued = batcher.dropped_texts, batcher._queued_texts
        batcher.close()
        return dropped, queued

    assert asyncio.run(scenario()) == (3, 0)
    assert process.batches == [["L0"]]
