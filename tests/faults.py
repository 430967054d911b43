"""Helpers of the fault tests: real `auditlog` processes, producers that retry their
batches, and what was stored, in ingest order."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.conftest import SECRET_KEY, WorkspaceKeys, event
from tests.live_client import LiveClient


def cli_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
        "AUDITLOG_DATA_DIR": str(data_dir),
        "AUDITLOG_ALLOW_PRIVATE_DESTINATIONS": "1",
        "AUDITLOG_INGEST_EVENTS_PER_SECOND": "0",
    }
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """`auditlog ARGS...` in a process of its own."""
    return subprocess.Popen([sys.executable, "-m", "auditlog.cli", *args], env=env)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(base_url: str, within: float = 30) -> httpx.Response:
    """The first 200 of /readyz."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        while time.monotonic() < deadline:
            try:
                response = await http.get("/readyz")
                if response.status_code == 200:
                    return response
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{base_url} was not ready within {within} s")


@dataclass
class Producers:
    """Producers sending fixed batches, each retried until it is answered 202 (the
    same ids: a batch stored before its answer was lost comes back as duplicates)."""

    workspace: WorkspaceKeys
    batches: int
    size: int
    statuses: dict[int, int] = field(default_factory=dict)
    transport_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # every id, answered 202
    accepted_batches: int = 0

    async def run(self, count: int) -> None:
        await asyncio.gather(*(self._produce() for _ in range(count)))

    async def _produce(self) -> None:
        for _ in range(self.batches):
            batch = [event("file.uploaded") for _ in range(self.size)]
            for _attempt in range(300):  # bounded: about a minute of retries
                try:
                    response = await self.workspace.ingest(batch)
                except httpx.TransportError as exc:  # a hang ends in the client's timeout
                    self.transport_errors.append(repr(exc))
                    await asyncio.sleep(0.2)
                    continue
                self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
                if response.status_code == 202:
                    self.sent += [e["id"] for e in batch]
                    self.accepted_batches += 1
                    break
                if response.status_code != 503 or not response.headers.get("Retry-After"):
                    self.unexpected.append(f"{response.status_code} {response.text[:200]}")
                # Sooner than Retry-After says (5 s): keeps the test short.
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("a batch was never accepted")


async def stored_ids(database_url: str, workspace_id: str) -> list[str]:
    """The workspace's event ids in ingest order, duplicates included (none expected)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT id::text FROM audit_events WHERE workspace_id = $1 ORDER BY xid, seq",
            workspace_id,
        )
    finally:
        await conn.close()
    return [r["id"] for r in rows]


def queued_edges(client: LiveClient, op_id: str) -> list[dict[str, Any]]:
    """The edges received on an operation so far, without waiting."""
    out: list[dict[str, Any]] = []
    queue = client.inbox[op_id]
    while not queue.empty():
        message = queue.get_nowait()
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        out.append(message["payload"]["data"]["auditEvents"])
    return out


async def edges_until(
    client: LiveClient, op_id: str, want: set[str], within: float = 30
) -> list[dict[str, Any]]:
    """Edges received until every id of `want` came (fails after `within` seconds)."""
    got: list[dict[str, Any]] = []
    missing = set(want)
    deadline = time.monotonic() + within
    while missing:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(missing)} of {len(want)} events never arrived"
        message = await client.next_message(op_id, wait=left)
        assert message["type"] == "next" and "errors" not in message["payload"], message
        edge = message["payload"]["data"]["auditEvents"]
        got.append(edge)
        missing.discard(edge["node"]["id"])
    return got


def ids_of(edges: list[dict[str, Any]]) -> list[str]:
    return [e["node"]["id"] for e in edges]
