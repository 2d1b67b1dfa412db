"""Background task shutdown: one helper cancels, waits, and never hides a failure."""

from __future__ import annotations

import asyncio
import logging

import pytest

from k3py.shutdown import cancel_and_wait


async def _forever() -> None:
    await asyncio.Event().wait()


async def _fails_while_unwinding() -> None:
    try:
        await asyncio.Event().wait()
    finally:
        raise RuntimeError("cleanup broke")


async def test_every_task_is_cancelled_and_has_ended() -> None:
    tasks = [asyncio.create_task(_forever()) for _ in range(3)]
    await asyncio.sleep(0)
    await cancel_and_wait(*tasks, None)
    assert all(t.cancelled() for t in tasks)


async def test_an_error_while_unwinding_reaches_the_caller() -> None:
    task = asyncio.create_task(_fails_while_unwinding())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup broke"):
        await cancel_and_wait(task)


async def test_with_a_logger_errors_are_logged_by_task_name_and_the_rest_still_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = asyncio.create_task(_fails_while_unwinding(), name="pod-statuses")
    other = asyncio.create_task(_forever())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="k3py.test"):
        await cancel_and_wait(broken, other, log=logging.getLogger("k3py.test"))
    assert other.cancelled()
    assert [r.getMessage() for r in caplog.records] == ["background task pod-statuses failed"]
    assert "cleanup broke" in caplog.text


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    inner = asyncio.create_task(_forever())

    async def stopper() -> None:
        await cancel_and_wait(inner)
        await asyncio.Event().wait()

    outer = asyncio.create_task(stopper())
    await asyncio.sleep(0)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert inner.done()


async def test_a_stop_in_a_cancelled_callers_finally_still_waits_for_every_task() -> None:
    tasks = [asyncio.create_task(_forever()) for _ in range(3)]

    async def owner() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await cancel_and_wait(*tasks)

    running = asyncio.create_task(owner())
    await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert all(t.cancelled() for t in tasks)
