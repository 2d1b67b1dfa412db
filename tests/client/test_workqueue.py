"""WorkQueue and FakeClock: de-duplication, re-queue while processing, delays and back-off."""

from __future__ import annotations

import asyncio

import pytest

from k3py.cluster.client.clock import FakeClock, wait_event
from k3py.cluster.client.workqueue import ShutDown, WorkQueue


async def test_a_key_is_queued_once_and_requeued_if_added_while_processing() -> None:
    queue: WorkQueue[str] = WorkQueue(FakeClock())
    queue.add("a")
    queue.add("b")
    queue.add("a")
    assert len(queue) == 2
    first = await queue.get()
    assert first == "a"
    queue.add("a")  # changed again while a worker holds it
    assert await queue.get() == "b"
    assert len(queue) == 0
    queue.done("a")
    assert await queue.get() == "a"


async def test_delayed_adds_wait_for_the_clock_and_the_earliest_wins() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add_after("job", 30)
    queue.add_after("job", 10)
    queue.add_after("job", 20)
    await clock.advance(9)
    assert len(queue) == 0
    await clock.advance(1)
    assert len(queue) == 1
    await clock.advance(60)
    assert len(queue) == 1  # the later requests were folded into the first
    await queue.shut_down()


async def test_retry_backs_off_exponentially_until_forgotten() -> None:
    queue: WorkQueue[str] = WorkQueue(FakeClock())
    assert [queue.retry("k") for _ in range(4)] == [0.05, 0.1, 0.2, 0.4]
    queue.forget("k")
    assert queue.retry("k") == 0.05
    for _ in range(40):
        queue.retry("x")
    assert queue.retry("x") == 60.0
    await queue.shut_down()


async def test_shut_down_releases_waiting_workers() -> None:
    queue: WorkQueue[str] = WorkQueue(FakeClock())
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    await queue.shut_down()
    with pytest.raises(ShutDown):
        await waiter


async def test_fake_clock_wakes_sleepers_in_order_and_loops_tick_within_one_advance() -> None:
    clock = FakeClock()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(5)
            ticks.append(clock.monotonic())

    task = asyncio.create_task(ticker())
    await clock.advance(60)
    assert ticks == [5.0 * i for i in range(1, 13)]
    assert clock.now().isoformat() == "2026-01-01T00:01:00+00:00"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_wait_event_returns_on_the_event_or_after_the_virtual_timeout() -> None:
    clock = FakeClock()
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_event(clock, event, 40))
    await clock.advance(39)
    assert not waiting.done()
    await clock.advance(1)
    assert await waiting is False
    waiting = asyncio.create_task(wait_event(clock, event, 40))
    await asyncio.sleep(0)
    event.set()
    assert await waiting is True
    assert clock.sleepers == 0
