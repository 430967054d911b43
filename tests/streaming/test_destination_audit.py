"""A change to a streaming destination and its audit_log.stream.* event commit
together: when the event cannot be written the change is not made, and no reader
ever sees one without the other (docs/architecture.md, "The audit of the audit")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from auditlog.runtime import Services
from tests.conftest import WorkspaceKeys
from tests.streaming.gql import DELETE, PAUSE, UPDATE, create_destination, destination, error_of
from tests.streaming.receivers import Receiver

LOCK_KEY = 7_140_014  # an advisory lock only these tests take


@asynccontextmanager
async def stream_event_trigger(
    services: Services, workspace_id: str, body: str
) -> AsyncIterator[None]:
    """A trigger on audit_events that runs `body` for this workspace's
    audit_log.stream.* events, dropped afterwards."""
    name = f"test_stream_audit_{workspace_id.replace('-', '_')}"
    owner = await asyncpg.connect(services.database_url)
    try:
        await owner.execute(
            f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN {body} RETURN NEW; END $$;
                CREATE TRIGGER {name} AFTER INSERT ON audit_events FOR EACH ROW
                WHEN (NEW.workspace_id = '{workspace_id}'
                      AND NEW.action LIKE 'audit_log.stream.%')
                EXECUTE FUNCTION {name}()"""
        )
        try:
            yield
        finally:
            await owner.execute(f"DROP TRIGGER {name} ON audit_events; DROP FUNCTION {name}()")
    finally:
        await owner.close()


async def stream_events(services: Services, workspace_id: str) -> list[str]:
    owner = await asyncpg.connect(services.database_url)
    try:
        rows = await owner.fetch(
            """SELECT action FROM audit_events
               WHERE workspace_id = $1 AND action LIKE 'audit_log.stream.%' ORDER BY seq""",
            workspace_id,
        )
    finally:
        await owner.close()
    return [r["action"] for r in rows]


async def destination_names(services: Services, workspace_id: str) -> list[str]:
    owner = await asyncpg.connect(services.database_url)
    try:
        rows = await owner.fetch(
            "SELECT name FROM stream_destinations WHERE workspace_id = $1", workspace_id
        )
    finally:
        await owner.close()
    return [r["name"] for r in rows]


REFUSE = "RAISE EXCEPTION 'audit event refused by the test';"


async def test_create_leaves_no_destination_when_its_audit_event_fails(
    workspace: WorkspaceKeys, services: Services, receiver: Receiver
) -> None:
    async with stream_event_trigger(services, workspace.id, REFUSE):
        body = await workspace.gql(
            "mutation($input: CreateStreamingDestinationInput!) "
            "{ createStreamingDestination(input: $input) { destination { id } } }",
            {"input": {"name": "siem", "config": {"webhook": {"url": receiver.url}}}},
        )
    assert error_of(body)
    assert await destination_names(services, workspace.id) == []
    assert await stream_events(services, workspace.id) == []


async def test_update_pause_and_delete_change_nothing_when_their_audit_event_fails(
    workspace: WorkspaceKeys, services: Services, receiver: Receiver
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url}})
    dest_id = created["destination"]["id"]
    before = await destination(workspace, dest_id)
    async with stream_event_trigger(services, workspace.id, REFUSE):
        renamed = await workspace.gql(UPDATE, {"id": dest_id, "input": {"name": "renamed"}})
        paused = await workspace.gql(PAUSE, {"id": dest_id})
        deleted = await workspace.gql(DELETE, {"id": dest_id})
    for body in (renamed, paused, deleted):
        assert error_of(body)
    after = await destination(workspace, dest_id)
    assert (
        (after["name"], after["status"])
        == (before["name"], before["status"])
        == (
            "siem",
            "ACTIVE",
        )
    )
    assert await stream_events(services, workspace.id) == ["audit_log.stream.created"]


async def test_a_new_destination_and_its_event_become_visible_together(
    workspace: WorkspaceKeys, services: Services, receiver: Receiver
) -> None:
    # The trigger waits on a lock the test holds: the create is stopped with its
    # destination inserted and its event being written, in the one transaction.
    wait = f"PERFORM pg_advisory_xact_lock({LOCK_KEY});"
    holder = await asyncpg.connect(services.database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        async with stream_event_trigger(services, workspace.id, wait):
            creating = asyncio.create_task(
                create_destination(workspace, {"webhook": {"url": receiver.url}})
            )
            waiting = """SELECT count(*) FROM pg_locks
                         WHERE locktype = 'advisory' AND objid = $1 AND NOT granted"""
            for _ in range(200):
                if await holder.fetchval(waiting, LOCK_KEY):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the create never reached its audit event")
            assert await destination_names(services, workspace.id) == []
            assert await stream_events(services, workspace.id) == []
            await holder.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
            await asyncio.wait_for(creating, 10)
        assert await destination_names(services, workspace.id) == ["siem"]
        assert await stream_events(services, workspace.id) == ["audit_log.stream.created"]
    finally:
        await holder.close()
