"""SIGTERM of a real `auditlog serve` mid-ingest: it stops accepting, the requests in
flight finish with 202, websockets are closed with 1001, and it exits within 10 s;
a subscriber resumes from its cursor on another instance with no gap."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningService, WorkspaceKeys, event, free_port
from tests.faults import (
    cli_env,
    edges_until,
    ids_of,
    queued_edges,
    start_cli,
    stop_process,
    stored_ids,
    wait_ready,
)
from tests.live_client import live_client
from tests.test_live import PRODUCT

BATCH = 200


@dataclass
class Attempt:
    started: float
    ended: float
    status: int | None  # None: no answer (the connection was refused or closed)
    ids: list[str]


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_sigterm_finishes_requests_in_flight_closes_websockets_1001_and_exits(
    database_url: str, data_dir: Path, workspace: WorkspaceKeys, service: RunningService
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_cli(
        cli_env(database_url, data_dir),
        *("serve", "--port", str(port), "--log-level", "warning", "--no-background"),
    )
    attempts: list[Attempt] = []
    try:
        await wait_ready(base)
        async with (
            httpx.AsyncClient(base_url=base, timeout=15) as http,
            live_client(base, workspace.admin) as client,
        ):
            workspace.http = http
            op = await client.subscribe(PRODUCT)
            await asyncio.sleep(0.5)
            first = (await workspace.ingest([event("file.uploaded")])).json()["ids"]
            seen = await edges_until(client, op, set(first))

            async def produce() -> None:
                for _ in range(40):  # bounded; ends at the first request not answered
                    batch = [event("file.uploaded") for _ in range(BATCH)]
                    ids = [e["id"] for e in batch]
                    started = time.monotonic()
                    try:
                        response = await workspace.ingest(batch)
                    except httpx.TransportError:
                        attempts.append(Attempt(started, time.monotonic(), None, ids))
                        return
                    attempts.append(Attempt(started, time.monotonic(), response.status_code, ids))
                    if response.status_code != 202:
                        return

            producers = [asyncio.create_task(produce()) for _ in range(4)]
            while sum(a.status == 202 for a in attempts) < 4:
                assert not all(p.done() for p in producers), attempts
                await asyncio.sleep(0.02)
            terminated_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code, reason = await client.closed(wait=10)
            closed_after = time.monotonic() - terminated_at
            await asyncio.wait_for(asyncio.gather(*producers), 30)
            returncode = await asyncio.to_thread(proc.wait, 15)
            exited_after = time.monotonic() - terminated_at
            seen += queued_edges(client, op)
        print(
            f"\nSIGTERM: websockets closed ({code}) after {closed_after:.2f} s, "
            f"exit {returncode} after {exited_after:.2f} s"
        )
        assert returncode == 0
        assert exited_after < 10
        assert code == 1001 and reason and "cursor" in reason
        answered = [a for a in attempts if a.status is not None]
        assert {a.status for a in answered} == {202}, [a.status for a in answered]
        in_flight = [a for a in answered if a.started < terminated_at < a.ended]
        assert in_flight, "no request was in flight at SIGTERM"
        accepted = first + [i for a in answered for i in a.ids]
        # A request that got no answer was never processed, or was: either is fine.
        ours = set(accepted) | {i for a in attempts for i in a.ids}
        stored = [i for i in await stored_ids(database_url, workspace.id) if i in ours]
        assert len(stored) == len(set(stored)), "an event was stored twice"
        assert set(accepted) <= set(stored), "an event answered 202 was not stored"
        # Another instance (the session's service) resumes the subscription from its
        # last cursor: every stored event after it, in ingest order, no gap, no duplicate.
        rest = set(stored) - set(ids_of(seen))
        async with live_client(service.base_url, workspace.admin) as resumed:
            op = await resumed.subscribe({**PRODUCT, "after": seen[-1]["cursor"]})
            again = await edges_until(resumed, op, rest, within=30) if rest else []
            await resumed.quiet(op, 0.5)
        assert ids_of(seen) + ids_of(again) == stored
    finally:
        stop_process(proc)
