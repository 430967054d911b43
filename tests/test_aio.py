"""cancel_and_wait ends a task even when Python 3.11's wait_for drops the cancellation."""

import asyncio
import sys

import pytest

from auditlog.aio import cancel_and_wait


async def _looping_task(ready: asyncio.Event) -> tuple[asyncio.Task[None], list[int]]:
    """A publisher-like loop: wait for a wake-up (through wait_for), then loop again."""
    rounds: list[int] = []

    async def body() -> None:
        while True:
            await asyncio.wait_for(ready.wait(), 30)
            ready.clear()
            rounds.append(1)

    task = asyncio.create_task(body())
    await asyncio.sleep(0)  # parked in wait_for
    return task, rounds


async def test_a_cancellation_that_lands_with_the_inner_result_still_ends_the_task() -> None:
    ready = asyncio.Event()
    task, rounds = await _looping_task(ready)
    # The wake-up and the cancellation in the same iteration: on 3.11 wait_for returns
    # the result and the single cancel is lost.
    ready.set()
    task.cancel()
    await asyncio.sleep(0.05)
    if sys.version_info < (3, 12):
        assert not task.done() and rounds == [1], "the race this helper exists for"
    ready.set()
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert task.cancelled()


async def test_an_error_the_task_ended_with_is_raised() -> None:
    async def failing() -> None:
        raise RuntimeError("sink exploded")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="sink exploded"):
        await cancel_and_wait(task)


async def test_a_task_that_ended_quietly_is_fine() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await cancel_and_wait(task)
    assert task.done() and not task.cancelled()
