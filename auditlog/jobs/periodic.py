"""One loop for every periodic job of a process: a pass, then a rest, until stopped.

A pass that fails is logged and the next one tries again; it never stops the
process. The loop runs while `every(...)` is entered and is cancelled on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from auditlog.aio import cancel_and_wait

log = logging.getLogger(__name__)


async def _loop(name: str, run_once: Callable[[], Awaitable[object]], interval: float) -> None:
    while True:
        try:
            await run_once()
        except asyncio.CancelledError:
            raise
        except Exception:  # logged; the next pass tries again
            log.exception("%s pass failed", name)
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def every(
    interval: float, name: str, run_once: Callable[[], Awaitable[object]]
) -> AsyncIterator[None]:
    task = asyncio.create_task(_loop(name, run_once, interval), name=f"auditlog-{name}")
    try:
        yield
    finally:
        await cancel_and_wait(task)
