"""Small asyncio helpers the service's background tasks share."""

from __future__ import annotations

import asyncio
from typing import Any

# How often a task that has not ended yet is cancelled again.
RECANCEL_SECONDS = 0.2


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and return once it has ended; an error it ended with is raised.

    One cancel is not always enough on Python 3.11: `asyncio.wait_for` returns its inner
    result and drops the cancellation when both land in the same loop iteration
    (CPython gh-86296, fixed in 3.12), so a loop around such a call runs on and a plain
    `task.cancel(); await task` waits forever. Cancelling again until the task is done
    ends it on the next await."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error
