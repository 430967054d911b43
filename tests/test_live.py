"""Live tail over websockets: auth, filters, isolation, resume without gap, bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import RunningService, WorkspaceKeys, create_workspace_keys, event
from tests.live_client import live_client, ws_url

PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
# The service writes audit_log.* events (WORKSPACE) of its own when keys are made.
PRODUCT = {"filter": {"categories": ["AUTHENTICATION", "DATA", "AI"]}}


async def ingest(workspace: WorkspaceKeys, events: list[dict[str, Any]]) -> list[str]:
    response = await workspace.ingest(events)
    assert response.status_code == 202, response.text
    ids: list[str] = response.json()["ids"]
    return ids


async def close_code(base_url: str, payload: dict[str, Any]) -> tuple[int, str]:
    async with websockets.connect(ws_url(base_url), subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_connection_init_without_or_with_bad_token_closes_4401(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    code, reason = await close_code(service.base_url, {})
    assert code == 4401 and "Unauthorized" in reason
    code, _ = await close_code(service.base_url, {"authorization": "Bearer alk_key_nope.secret"})
    assert code == 4401
    code, reason = await close_code(
        service.base_url, {"authorization": f"Bearer {workspace.member}"}
    )
    assert code == 4403 and "member" in reason
    code, _ = await close_code(
        service.base_url, {"authorization": f"Bearer {workspace.ingest_key}"}
    )
    assert code == 4403


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscriber_receives_new_events_as_edges(
    service: RunningService, workspace: WorkspaceKeys, protocol: str
) -> None:
    async with live_client(service.base_url, workspace.admin, protocol) as client:
        op = await client.subscribe(PRODUCT)
        await asyncio.sleep(0.3)
        ids = await ingest(workspace, [event(), event("file.uploaded")])
        edges = await client.edges(op, 2)
    assert [e["node"]["id"] for e in edges] == ids
    # The edge cursor works with the query API: nothing newer than the last one.
    page = await workspace.gql(
        "query($c: String) { auditEvents(after: $c) { edges { node { id } } } }",
        {"c": edges[-1]["cursor"]},
    )
    assert ids[-1] not in [e["node"]["id"] for e in page["data"]["auditEvents"]["edges"]]
    assert ids[0] in [e["node"]["id"] for e in page["data"]["auditEvents"]["edges"]]


async def test_each_subscriber_sees_only_its_workspace_and_its_filter(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    other = await create_workspace_keys(service.services, workspace.http)
    logins = {"filter": {"actions": ["user.login.*"], "actorEmail": "ADA@acme.io"}}
    async with (
        live_client(service.base_url, workspace.admin) as mine,
        live_client(service.base_url, other.admin) as theirs,
    ):
        op_all = await mine.subscribe(PRODUCT)
        op_logins = await mine.subscribe(logins)
        op_theirs = await theirs.subscribe(PRODUCT)
        await asyncio.sleep(0.3)
        ids = await ingest(
            workspace,
            [
                event("user.login.failed"),
                event("file.uploaded"),
                event("user.login.success", actor={"type": "USER", "email": "bob@acme.io"}),
            ],
        )
        everything = await mine.edges(op_all, 3)
        only_logins = await mine.edges(op_logins, 1)
        await theirs.quiet(op_theirs, 1.5)
        await mine.quiet(op_logins, 0.5)
    assert [e["node"]["id"] for e in everything] == ids
    assert [e["node"]["id"] for e in only_logins] == ids[:1]


async def test_invalid_filter_or_cursor_is_an_error_on_that_subscription_only(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    async with live_client(service.base_url, workspace.admin) as client:
        bad_ip = await client.subscribe({"filter": {"ipAddress": "10.0.0.300/8"}})
        bad_cursor = await client.subscribe({"after": "bm90LWEtY3Vyc29y"})
        good = await client.subscribe(PRODUCT)
        for op, argument in ((bad_ip, "filter.ipAddress"), (bad_cursor, "after")):
            message = await client.next_message(op)
            assert message["type"] == "error", message
            error = message["payload"][0]
            assert error["extensions"]["code"] == "BAD_USER_INPUT", error
            assert argument in error["message"]
        await asyncio.sleep(0.3)
        ids = await ingest(workspace, [event()])
        assert [e["node"]["id"] for e in await client.edges(good, 1)] == ids


async def test_resume_after_cursor_replays_then_goes_live_without_gap_or_duplicate(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    async with live_client(service.base_url, workspace.admin) as client:
        op = await client.subscribe(PRODUCT)
        await asyncio.sleep(0.3)
        first = await ingest(workspace, [event() for _ in range(3)])
        seen = await client.edges(op, 3)
    cursor = seen[0]["cursor"]
    missed = await ingest(workspace, [event() for _ in range(4)])
    async with live_client(service.base_url, workspace.admin) as client:
        op = await client.subscribe({**PRODUCT, "after": cursor})
        replayed = await client.edges(op, 6)
        later = await ingest(workspace, [event() for _ in range(2)])
        live = await client.edges(op, 2)
        await client.quiet(op, 1.0)
    assert [e["node"]["id"] for e in replayed + live] == first[1:] + missed + later


async def test_resume_across_a_held_write_transaction_skips_nothing(
    service: RunningService, workspace: WorkspaceKeys, database_url: str
) -> None:
    """Invariant 3: a transaction holding an earlier seq commits after later events."""
    async with live_client(service.base_url, workspace.admin) as client:
        op = await client.subscribe(PRODUCT)
        await asyncio.sleep(0.3)
        before = await ingest(workspace, [event()])
        start = (await client.edges(op, 1))[0]
        assert start["node"]["id"] == before[0]
        held = await asyncpg.connect(database_url)
        try:
            tx = held.transaction()
            await tx.start()
            held_id = await insert_raw_event(held, workspace.id)
            after_ids = await ingest(workspace, [event(), event()])
            # The later events are committed but must wait behind the open transaction.
            await client.quiet(op, 2.0)
            async with live_client(service.base_url, workspace.admin) as resumer:
                resumed_op = await resumer.subscribe({**PRODUCT, "after": start["cursor"]})
                await resumer.quiet(resumed_op, 1.0)
                await tx.commit()
                resumed = await resumer.edges(resumed_op, 3)
                await resumer.quiet(resumed_op, 1.0)
            live = await client.edges(op, 3)
            await client.quiet(op, 0.5)
        finally:
            await held.close()
    expected = [held_id, *after_ids]
    assert [e["node"]["id"] for e in live] == expected
    assert [e["node"]["id"] for e in resumed] == expected


async def insert_raw_event(conn: asyncpg.Connection, workspace_id: str) -> str:
    """One event written the way ingest writes it, inside the caller's transaction."""
    import uuid
    from datetime import UTC, datetime

    import orjson

    event_id = uuid.uuid4()
    now = datetime.now(UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    payload = {
        "id": str(event_id),
        "workspaceId": workspace_id,
        "occurredAt": stamp,
        "receivedAt": stamp,
        "action": "user.login.success",
        "category": "AUTHENTICATION",
        "actor": {"type": "USER", "id": "u_1", "name": None, "email": "ada@acme.io"},
        "targets": [],
        "ipAddress": None,
        "userAgent": None,
        "location": None,
        "device": None,
        "metadata": {},
        "anomalies": [],
    }
    await conn.execute(
        """INSERT INTO audit_events (workspace_id, occurred_at, id, received_at, action,
               category, actor_type, actor_id, actor_email, payload)
           VALUES ($1, $2, $3, $2, 'user.login.success', 'AUTHENTICATION', 'USER', 'u_1',
               'ada@acme.io', $4)""",
        workspace_id,
        now,
        event_id,
        orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode(),
    )
    return str(event_id)


async def test_disconnect_leaves_no_subscriber_tail_or_task_behind(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    hub = service.services.live
    assert hub is not None
    async with live_client(service.base_url, workspace.admin) as client:
        await client.subscribe(PRODUCT)
        await client.subscribe({"after": None})
        for _ in range(50):
            if workspace.id in hub.tails and len(hub.tails[workspace.id].subscribers) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(hub.tails[workspace.id].subscribers) == 2

    def tail_tasks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == f"live-tail:{workspace.id}"]

    for _ in range(100):
        if workspace.id not in hub.tails and not tail_tasks():
            break
        await asyncio.sleep(0.05)
    assert workspace.id not in hub.tails
    assert not tail_tasks()
