"""A streaming destination's dead letters: the events it refused for good, set aside
by delivery (delivery.py) so that its stream goes on. Listed for owners and admins;
queued again by retryDeadLetters, which is audited like every change to a destination.

Reading the list writes no audit event (no read of a destination does): its content
is audited instead, each entry by the audit_log.stream.dead_lettered event written
as it was set aside, each retry by audit_log.stream.dead_letters_retried.
"""

from __future__ import annotations

import uuid

import asyncpg

from auditlog.errors import NotFoundError
from auditlog.model import DeadLetterRow
from auditlog.services.ingest import Ingestor
from auditlog.services.service_events import audited
from auditlog.services.streams import Caller
from auditlog.storage import dead_letters as store
from auditlog.storage.streams import read_destination


def _destination_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError("streaming destination not found") from None


async def list_dead_letters(
    pool: asyncpg.Pool, caller: Caller, destination_id: str, size: int
) -> list[DeadLetterRow]:
    """The destination's first `size` dead letters, in ingest order."""
    async with pool.acquire() as conn:
        return await store.read_dead_letters(
            conn, caller.workspace_id, _destination_id(destination_id), size
        )


async def retry_dead_letters(
    pool: asyncpg.Pool, ingestor: Ingestor, caller: Caller, destination_id: str
) -> int:
    """Queue every dead letter of the destination for its next delivery round; how many
    were queued now. The audit event commits with the change."""
    async with pool.acquire() as conn, audited(conn, ingestor) as audit:
        row = await read_destination(conn, caller.workspace_id, _destination_id(destination_id))
        if row is None:
            raise NotFoundError("streaming destination not found")
        count = await store.queue_dead_letters(conn, caller.workspace_id, row.id)
        await audit.record(
            caller.workspace_id,
            "audit_log.stream.dead_letters_retried",
            actor=caller.actor,
            targets=[{"type": "streaming_destination", "id": str(row.id), "name": row.name}],
            metadata={"kind": row.kind, "queued": count},
        )
    return count
