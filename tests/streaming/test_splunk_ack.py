"""Splunk HEC indexer acknowledgement (`useAck`) against a strict local HEC: the
cursor moves only once the indexer acknowledged, an acknowledgement that never
comes resends the batch after the ack timeout, and without useAck nothing changes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from auditlog.runtime import Services
from auditlog.services.service_events import ServiceEventWriter
from auditlog.streaming.delivery import DeliveryOptions
from auditlog.streaming.sinks.splunk import channel_of
from auditlog.streaming.worker import StreamWorker, running_worker
from tests.conftest import WorkspaceKeys, event
from tests.streaming.gql import TEST, UPDATE, create_destination, destination
from tests.streaming.receivers import HecReceiver, hec_objects, ingest, wait_until
from tests.streaming.test_checkpoints import checkpoint_cursor, seal

# Short leases, and an acknowledgement given up after a second.
SHORT_ACK = DeliveryOptions(lease_seconds=4, poll_seconds=0.2, send_timeout=1.0, ack_timeout=1.0)


@pytest.fixture
async def hec() -> AsyncIterator[HecReceiver]:
    """A HEC whose token has indexer acknowledgement on."""
    r = HecReceiver(token="hec-ack-token", use_ack=True)
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def short_ack_worker(services: Services) -> AsyncIterator[StreamWorker]:
    async with running_worker(
        services.pool, services.bus, services.settings, SHORT_ACK, record=ServiceEventWriter()
    ) as w:
        yield w


async def state(services: Services, destination_id: str) -> dict[str, Any]:
    """The destination's cursor and error state, read in one statement."""
    async with services.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT cursor_xid, cursor_seq, last_error, last_delivered_at
               FROM stream_destinations WHERE id = $1::uuid""",
            destination_id,
        )
    assert row is not None
    return {
        "cursor": (row["cursor_xid"], row["cursor_seq"]),
        "last_error": row["last_error"],
        "last_delivered_at": row["last_delivered_at"],
    }


def event_ids(objects: list[dict[str, Any]]) -> list[str]:
    return [o["event"]["id"] for o in objects if "id" in o["event"]]


async def create_splunk(ws: WorkspaceKeys, hec: HecReceiver, use_ack: bool | None) -> str:
    config: dict[str, Any] = {"url": hec.url, "token": hec.token}
    if use_ack is not None:
        config["useAck"] = use_ack
    created = await create_destination(ws, {"splunkHec": config})
    return str(created["destination"]["id"])


async def test_splunk_ack_moves_the_cursor_only_after_the_indexer_acknowledged(
    workspace: WorkspaceKeys, hec: HecReceiver, worker: StreamWorker, services: Services
) -> None:
    hec.acknowledging = False
    dest_id = await create_splunk(workspace, hec, use_ack=True)
    start = (await state(services, dest_id))["cursor"]
    ids = await ingest(workspace, [event("user.login.failed") for _ in range(20)])
    await wait_until(lambda: hec.requests and hec.polls)
    held_since = time.monotonic()
    # Held for longer than a lease (4 s): the wait keeps it, so nothing is resent.
    await asyncio.sleep(5)
    held = await state(services, dest_id)
    assert held["cursor"] == start and held["last_delivered_at"] is None
    assert (await destination(workspace, dest_id))["lastDeliveredAt"] is None
    assert len(hec.requests) == 1
    channel = channel_of(uuid.UUID(dest_id))
    assert hec.requests[0].headers["x-splunk-request-channel"] == channel
    assert {c for c, _ in hec.polls} == {channel} and all(a == [0] for _, a in hec.polls)
    # Polls start at 0.2 s apart and grow to 2 s: a handful over the hold, not 25.
    assert 3 <= len(hec.polls) < 15, len(hec.polls)
    hec.acknowledging = True

    async def delivered() -> bool:
        dest = await destination(workspace, dest_id)
        return dest["lastDeliveredAt"] is not None and dest["lagEvents"] == 0

    await wait_until(delivered)
    assert time.monotonic() - held_since >= 5
    after = await state(services, dest_id)
    assert after["cursor"] > start and after["last_error"] is None
    got = event_ids(hec.objects())
    assert set(ids) <= set(got) and len(got) == len(set(got))  # once each: no resend
    assert all(hec.acked[key] >= 1 for key in hec.sent)


@pytest.mark.parametrize("mode", ["never", "lost"])
async def test_splunk_ack_that_never_comes_is_resent_after_the_ack_timeout(
    workspace: WorkspaceKeys,
    hec: HecReceiver,
    short_ack_worker: StreamWorker,
    services: Services,
    mode: str,
) -> None:
    getattr(hec, mode).add(0)  # the first batch's ackId stays false, or is forgotten
    dest_id = await create_splunk(workspace, hec, use_ack=True)
    start = (await state(services, dest_id))["cursor"]
    ids = await ingest(workspace, [event("file.uploaded") for _ in range(10)])

    async def timed_out() -> dict[str, Any] | None:
        current = await state(services, dest_id)
        return current if current["last_error"] else None

    await wait_until(timed_out)
    failed = await timed_out()
    assert failed is not None  # the error is only cleared by an acknowledged send
    assert failed["cursor"] == start and failed["last_delivered_at"] is None
    assert "no indexer acknowledgement of ackId 0 within 1s" in failed["last_error"]

    async def delivered() -> bool:
        current = await state(services, dest_id)
        return current["last_error"] is None and set(ids) <= set(event_ids(hec.objects()))

    await wait_until(delivered)
    assert (await state(services, dest_id))["cursor"] > start
    first = event_ids(hec_objects(hec.requests[0].body))
    later = [i for r in hec.requests[1:] for i in event_ids(hec_objects(r.body))]
    assert first and set(first) <= set(later)  # the unacknowledged batch was sent again
    assert [a for _, a in hec.polls].count([0]) >= 2  # polled until the timeout
    assert hec.acked[(channel_of(uuid.UUID(dest_id)), 1)] >= 1
    dest = await destination(workspace, dest_id)
    assert dest["status"] == "ACTIVE" and dest["lastError"] is None


async def test_splunk_without_ack_is_unchanged_and_needs_no_channel(
    workspace: WorkspaceKeys, worker: StreamWorker, services: Services
) -> None:
    plain = HecReceiver(token="plain-token")
    await plain.start()
    try:
        dest_id = await create_splunk(workspace, plain, use_ack=None)
        ids = await ingest(workspace, [event("user.login.failed") for _ in range(30)])
        await wait_until(lambda: set(ids) <= set(event_ids(plain.objects())))

        async def moved() -> bool:
            return (await destination(workspace, dest_id))["lastDeliveredAt"] is not None

        await wait_until(moved)
        assert not plain.polls
        assert all("x-splunk-request-channel" not in r.headers for r in plain.requests)
        assert all(r.path == "/services/collector/event" for r in plain.requests)
    finally:
        await plain.stop()


async def test_splunk_use_ack_round_trips_and_the_test_waits_for_the_ack(
    workspace: WorkspaceKeys, hec: HecReceiver
) -> None:
    hec.ack_after = 3
    dest_id = await create_splunk(workspace, hec, use_ack=True)
    shown = (await destination(workspace, dest_id))["config"]
    assert shown["useAck"] is True and shown["token"] == "********"

    test = (await workspace.gql(TEST, {"id": dest_id}))["data"]["testStreamingDestination"]
    assert test["ok"] is True and test["statusCode"] == 200, test
    assert [a for _, a in hec.polls] == [[0], [0], [0]]  # acknowledged on its third poll
    assert hec.objects()[0]["event"]["action"] == "audit_log.stream.test"

    async def update(config: dict[str, Any]) -> dict[str, Any]:
        body = await workspace.gql(
            UPDATE, {"id": dest_id, "input": {"config": {"splunkHec": config}}}
        )
        assert "errors" not in body, body
        shown: dict[str, Any] = body["data"]["updateStreamingDestination"]["config"]
        return shown

    base = {"url": hec.url, "token": hec.token}
    assert (await update({**base, "useAck": False}))["useAck"] is False
    # Without acknowledgement, a token that has it on refuses requests without a channel.
    test = (await workspace.gql(TEST, {"id": dest_id}))["data"]["testStreamingDestination"]
    assert test["ok"] is False and test["statusCode"] == 400
    assert "Data channel is missing" in test["error"]
    assert (await update({**base, "useAck": True}))["useAck"] is True
    assert (await update(base))["useAck"] is False  # a new config leaves it out: off
    assert (await destination(workspace, dest_id))["config"]["useAck"] is False

    plain = HecReceiver(token=hec.token)
    await plain.start()
    try:
        await update({"url": plain.url, "token": hec.token, "useAck": True})
        test = (await workspace.gql(TEST, {"id": dest_id}))["data"]["testStreamingDestination"]
        assert test["ok"] is False and "without an ackId" in test["error"], test
    finally:
        await plain.stop()


async def test_splunk_ack_checkpoints_go_through_the_same_acknowledged_path(
    workspace: WorkspaceKeys, hec: HecReceiver, short_ack_worker: StreamWorker, services: Services
) -> None:
    hec.ack_after = 2
    dest_id = await create_splunk(workspace, hec, use_ack=True)
    await ingest(workspace, [event("user.login.failed") for _ in range(5)])
    size = await seal(services, workspace.id)

    async def reached() -> bool:
        return (await checkpoint_cursor(services, dest_id))[0] == size

    await wait_until(reached)
    channel = channel_of(uuid.UUID(dest_id))
    (key,) = [
        k
        for k, r in hec.sent.items()
        if any(o["sourcetype"] == "auditlog:checkpoint" for o in hec_objects(r.body))
    ]
    assert key[0] == channel and hec.acked[key] >= 2
