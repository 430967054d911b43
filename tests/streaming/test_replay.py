"""replayStreamingDestination: the cursor moves back to just before the earliest
ingest position of the retained events occurred at or after `from`, and a real
worker resends from there, in ingest order, to a real webhook receiver; also
while that worker is in the middle of a batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from auditlog.runtime import Services
from auditlog.storage import streams as store
from auditlog.streaming.worker import StreamWorker
from tests.conftest import WorkspaceKeys, create_workspace_keys, event
from tests.streaming.gql import REPLAY, create_destination, destination, error_of
from tests.streaming.receivers import Receiver, ingest, wait_until, webhook_events

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
YESTERDAY = TODAY - timedelta(days=1)
BEFORE = TODAY - timedelta(days=2)
REPLAYED = """{ auditEvents(filter: {actions: ["audit_log.stream.replayed"]}, first: 5) {
  edges { node { actor { id } targets { id } payload } } } }"""


def on(day: datetime, n: int, **extra: Any) -> list[dict[str, Any]]:
    """n events that occurred on `day` (UTC), minutes apart from noon."""
    noon = day + timedelta(hours=12)
    return [
        event("file.uploaded", occurredAt=(noon + timedelta(minutes=i)).isoformat(), **extra)
        for i in range(n)
    ]


def recent(n: int, **extra: Any) -> list[dict[str, Any]]:
    """n events that occurred in the last half hour."""
    start = datetime.now(UTC) - timedelta(minutes=30)
    return [
        event("file.uploaded", occurredAt=(start + timedelta(seconds=i)).isoformat(), **extra)
        for i in range(n)
    ]


def uploads(receiver: Receiver, secret: str) -> list[str]:
    """Ids of the test's events in the order the receiver got them (service events left out)."""
    return [e["id"] for e in webhook_events(receiver, secret) if e["action"] == "file.uploaded"]


async def position(services: Services, ws: WorkspaceKeys, event_id: str) -> dict[str, int]:
    async with services.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT xid::text::bigint AS xid, seq FROM audit_events "
            "WHERE workspace_id = $1 AND id = $2::uuid",
            ws.id,
            event_id,
        )
    assert row is not None
    return {"xid": row["xid"], "seq": row["seq"]}


async def test_replay_a_day_resends_every_event_of_that_day(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker, services: Services
) -> None:
    # DATA only: the workspace's own earlier events (its keys' creation, WORKSPACE) occurred
    # today too, and with them the replay would start before everything below.
    created = await create_destination(
        workspace, {"webhook": {"url": receiver.url + "/hook"}}, categories=["DATA"]
    )
    secret, dest_id = created["webhookSecret"], created["destination"]["id"]
    # Ingest order differs from occurred order: day-before events arrive late, after
    # some of yesterday's, and today's come last.
    before = await ingest(workspace, on(BEFORE, 20))
    yesterday = await ingest(workspace, on(YESTERDAY, 20))
    late = await ingest(workspace, on(BEFORE, 5, metadata={"late": True}))
    yesterday += await ingest(workspace, on(YESTERDAY + timedelta(hours=3), 10))
    today = await ingest(workspace, recent(5))
    everything = before + yesterday[:20] + late + yesterday[20:] + today
    await wait_until(lambda: uploads(receiver, secret) == everything)

    body = await workspace.gql(REPLAY, {"id": dest_id, "from": YESTERDAY.isoformat()})
    assert "errors" not in body, body
    assert body["data"]["replayStreamingDestination"]["id"] == dest_id
    # Everything ingested from yesterday's first event on comes again, in ingest
    # order: all of yesterday, and the late events of the day before with it.
    again = yesterday[:20] + late + yesterday[20:] + today
    await wait_until(lambda: uploads(receiver, secret) == everything + again)
    received = uploads(receiver, secret)
    assert all(received.count(i) == 2 for i in yesterday)
    assert all(received.count(i) == 1 for i in before)

    (node,) = [e["node"] for e in (await workspace.gql(REPLAYED))["data"]["auditEvents"]["edges"]]
    assert node["targets"] == [{"id": dest_id}]
    meta = node["payload"]["metadata"]
    first = await position(services, workspace, yesterday[0])
    assert meta["cursor"] == {"xid": first["xid"], "seq": first["seq"] - 1}
    last = await position(services, workspace, today[-1])
    previous = meta["previousCursor"]
    assert (previous["xid"], previous["seq"]) >= (last["xid"], last["seq"])
    assert meta["from"] == meta["replayFrom"] == YESTERDAY.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert meta["kind"] == "WEBHOOK"
    assert (await destination(workspace, dest_id))["status"] == "ACTIVE"


async def test_replay_under_a_worker_in_the_middle_of_a_batch_loses_nothing(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    created = await create_destination(
        workspace, {"webhook": {"url": receiver.url + "/hook"}}, categories=["DATA"]
    )
    secret, dest_id = created["webhookSecret"], created["destination"]["id"]
    yesterday = await ingest(workspace, on(YESTERDAY, 50))
    await wait_until(lambda: uploads(receiver, secret) == yesterday)
    # The next batch is held at the receiver: the worker has read it and sent it,
    # and moves the cursor past it only once it is acknowledged, after the replay.
    receiver.gate = b"held-batch"
    held = await ingest(workspace, recent(20, metadata={"mark": "held-batch"}))
    await wait_until(lambda: receiver.gated >= 1)
    body = await workspace.gql(REPLAY, {"id": dest_id, "from": YESTERDAY.isoformat()})
    assert "errors" not in body, body
    receiver.open_gate()
    # New events keep flowing after the replayed ones.
    after = await ingest(workspace, recent(10))
    # The held batch's acknowledgement did not carry the cursor past the replay:
    # yesterday's events come again, then everything after them, in order.
    resent = yesterday + held + after
    await wait_until(lambda: uploads(receiver, secret)[-len(resent) :] == resent)
    received = uploads(receiver, secret)
    assert received[: len(yesterday) + len(held)] == yesterday + held
    assert all(received.count(i) >= 2 for i in yesterday + held)


async def test_replay_is_refused_where_it_must_be(
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/hook"}})
    dest_id = created["destination"]["id"]
    variables = {"id": dest_id, "from": YESTERDAY.isoformat()}

    member = error_of(await workspace.gql(REPLAY, variables, key=workspace.member))
    assert member["extensions"]["code"] == "FORBIDDEN"
    other = await create_workspace_keys(services, http)
    assert error_of(await other.gql(REPLAY, variables))["extensions"]["code"] == "NOT_FOUND"
    unknown = {"id": "not-a-destination", "from": YESTERDAY.isoformat()}
    assert error_of(await workspace.gql(REPLAY, unknown))["extensions"]["code"] == "NOT_FOUND"
    pro = await create_workspace_keys(services, http, plan="professional")
    refused = error_of(await pro.gql(REPLAY, variables))
    assert refused["extensions"]["code"] == "FORBIDDEN" and "ENTERPRISE" in refused["message"]

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    error = error_of(await workspace.gql(REPLAY, {"id": dest_id, "from": future}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "from"
    malformed = error_of(await workspace.gql(REPLAY, {"id": dest_id, "from": "yesterday"}))
    assert "from" in malformed["message"]
    assert malformed["extensions"]["code"] == "BAD_USER_INPUT"
    # Nothing was replayed by any of those.
    events = await workspace.gql(REPLAYED)
    assert events["data"]["auditEvents"]["edges"] == []


async def test_replay_before_the_retention_starts_at_the_retention(
    services: Services, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    ws = await create_workspace_keys(services, http, retention_days=30)
    created = await create_destination(ws, {"webhook": {"url": receiver.url + "/hook"}})
    long_ago = datetime.now(UTC) - timedelta(days=400)
    body = await ws.gql(REPLAY, {"id": created["destination"]["id"], "from": long_ago.isoformat()})
    assert "errors" not in body, body
    (node,) = [e["node"] for e in (await ws.gql(REPLAYED))["data"]["auditEvents"]["edges"]]
    meta = node["payload"]["metadata"]
    replay_from = datetime.fromisoformat(meta["replayFrom"])
    assert abs(replay_from - (datetime.now(UTC) - timedelta(days=30))) < timedelta(minutes=1)
    assert meta["from"].startswith(long_ago.strftime("%Y-%m-%dT%H:%M"))


async def test_a_cursor_advance_read_before_a_replay_moves_nothing(
    workspace: WorkspaceKeys, services: Services, receiver: Receiver
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/hook"}})
    dest_id = created["destination"]["id"]
    await ingest(workspace, on(YESTERDAY, 3))
    async with services.pool.acquire() as conn:
        (key,) = await store.claim_destinations(conn, "test-worker", 30, 1)
        stale = await store.renew_lease(conn, "test-worker", key, 30)
    assert stale is not None
    body = await workspace.gql(REPLAY, {"id": dest_id, "from": YESTERDAY.isoformat()})
    assert "errors" not in body, body
    async with services.pool.acquire() as conn:
        replayed = await store.read_destination(conn, workspace.id, key.id)
        assert replayed is not None and replayed.cursor_epoch == stale.cursor_epoch + 1
        far = (replayed.cursor_xid + 1000, 0)
        args = ("test-worker", key, stale.generation, far, True, 30)
        assert await store.record_delivery(conn, *args, stale.cursor_epoch) is False
        kept = await store.read_destination(conn, workspace.id, key.id)
        assert kept is not None
        assert (kept.cursor_xid, kept.cursor_seq) == (replayed.cursor_xid, replayed.cursor_seq)
        assert await store.record_delivery(conn, *args, replayed.cursor_epoch) is True
        other = ("other-worker", key, stale.generation, far, True, 30)
        assert await store.record_delivery(conn, *other, replayed.cursor_epoch) is None
