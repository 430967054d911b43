"""Poison events: a destination refusing one event for good gets every other one, in
order, the refused one set aside on its dead-letter list (audited), retried on demand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from auditlog.runtime import Services
from auditlog.streaming.delivery import MAX_SET_ASIDE
from auditlog.streaming.worker import StreamWorker
from tests.conftest import WorkspaceKeys, create_workspace_keys, event
from tests.streaming.gql import UPDATE, create_destination, destination, error_of
from tests.streaming.receivers import (
    HecReceiver,
    Receiver,
    ingest,
    wait_until,
    webhook_events,
)

DEAD_LETTERS = """query { streamingDestinations { id status lastError
  deadLetters(first: 100) { eventId statusCode error failedAt } } }"""
RETRY = "mutation($id: ID!) { retryDeadLetters(id: $id) }"


async def dead_letters(ws: WorkspaceKeys, dest_id: str) -> list[dict[str, Any]]:
    body = await ws.gql(DEAD_LETTERS)
    assert "errors" not in body, body
    (found,) = [d for d in body["data"]["streamingDestinations"] if d["id"] == dest_id]
    letters: list[dict[str, Any]] = found["deadLetters"]
    return letters


async def audit_events(ws: WorkspaceKeys, action: str) -> list[dict[str, Any]]:
    body = await ws.gql(
        """query($a: [String!]) { auditEvents(filter: {actions: $a}, first: 50) {
             edges { node { action actor { type id } targets { id } metadata } } } }""",
        {"a": [action]},
    )
    assert "errors" not in body, body
    return [e["node"] for e in body["data"]["auditEvents"]["edges"]]


def delivered(receiver: Receiver, secret: str, action: str = "file.uploaded") -> list[str]:
    return [e["id"] for e in webhook_events(receiver, secret) if e["action"] == action]


@pytest.mark.parametrize("status", [413, 400])
async def test_a_refused_event_is_set_aside_the_rest_arrive_in_order_and_retry_delivers_it(
    status: int, workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    marker = f"poison-{status}"
    receiver.refuse = {marker.encode(): status}
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/dl"}})
    dest_id, secret = created["destination"]["id"], created["webhookSecret"]
    batch = [event("file.uploaded") for _ in range(300)]
    batch[137] = event("file.uploaded", metadata={"note": marker})
    ids = await ingest(workspace, batch)
    poison = ids[137]
    await wait_until(lambda: ids[-1] in delivered(receiver, secret))
    assert delivered(receiver, secret) == [i for i in ids if i != poison]  # in order, once
    # Splitting a batch down to one event costs about 2*log2(n) sends, not n.
    assert len(receiver.refused) <= 2 * math.ceil(math.log2(len(ids))) + 1
    (letter,) = await dead_letters(workspace, dest_id)
    assert letter["eventId"] == poison and letter["statusCode"] == status
    assert letter["error"].startswith(f"HTTP {status}") and letter["failedAt"]

    async def caught_up() -> bool:
        # Its own dead_lettered event included, which follows on the next round.
        dest = await destination(workspace, dest_id)
        return bool(dest["status"] == "ACTIVE" and dest["lagEvents"] == 0)

    await wait_until(caught_up)
    (audited,) = await audit_events(workspace, "audit_log.stream.dead_lettered")
    assert audited["actor"]["type"] == "SYSTEM" and audited["targets"][0]["id"] == dest_id
    assert audited["metadata"] == {
        "kind": "WEBHOOK",
        "eventId": poison,
        "statusCode": status,
        "retried": False,
    }
    # The stream goes on.
    later = await ingest(workspace, [event("file.uploaded") for _ in range(5)])
    await wait_until(lambda: later[-1] in delivered(receiver, secret))

    # Retried while the receiver still refuses it: it stays on the list.
    body = await workspace.gql(RETRY, {"id": dest_id})
    assert body == {"data": {"retryDeadLetters": 1}}, body
    refusals = len(receiver.refused)
    await wait_until(lambda: len(receiver.refused) > refusals)

    async def refused_again() -> bool:
        letters = await dead_letters(workspace, dest_id)
        return len(letters) == 1 and letters[0]["failedAt"] > letter["failedAt"]

    await wait_until(refused_again)
    assert poison not in delivered(receiver, secret)

    # Fixed: the retry delivers it (after the events that followed: out of order) and
    # empties the list.
    receiver.refuse = {}
    assert (await workspace.gql(RETRY, {"id": dest_id}))["data"]["retryDeadLetters"] == 1
    await wait_until(lambda: poison in delivered(receiver, secret))

    async def emptied() -> bool:
        return await dead_letters(workspace, dest_id) == []

    await wait_until(emptied)  # once the worker heard the acknowledgement
    assert delivered(receiver, secret).count(poison) == 1
    retried = await audit_events(workspace, "audit_log.stream.dead_letters_retried")
    assert [r["metadata"] for r in retried] == [{"kind": "WEBHOOK", "queued": 1}] * 2
    assert all(r["actor"]["type"] != "SYSTEM" for r in retried)
    again = await audit_events(workspace, "audit_log.stream.dead_lettered")
    assert [a["metadata"]["retried"] for a in again] == [True, False]  # newest first


@pytest.mark.parametrize("status", [408, 429, 503])
async def test_retryable_refusals_of_one_event_retry_and_never_set_it_aside(
    status: int, workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    marker = f"busy-{status}"
    receiver.refuse = {marker.encode(): status}
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/r"}})
    dest_id, secret = created["destination"]["id"], created["webhookSecret"]
    batch = [event("file.uploaded") for _ in range(20)]
    batch[7] = event("file.uploaded", metadata={"note": marker})
    ids = await ingest(workspace, batch)
    await wait_until(lambda: len(receiver.refused) >= 2, within=10)
    assert await dead_letters(workspace, dest_id) == []
    assert (await destination(workspace, dest_id))["lastError"].startswith(f"HTTP {status}")
    assert all(len(r.body) > 1000 for r in receiver.refused)  # the whole batch, never split
    receiver.refuse = {}
    await wait_until(lambda: ids[-1] in delivered(receiver, secret), within=15)
    assert delivered(receiver, secret) == ids
    assert await dead_letters(workspace, dest_id) == []


async def test_a_destination_refusing_every_event_shows_failing_after_a_few_dead_letters(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    receiver.refuse = {b"audit_log.events": 400}
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/all"}})
    dest_id = created["destination"]["id"]
    ids = await ingest(workspace, [event("file.uploaded") for _ in range(200)])

    async def failing() -> bool:
        return (await destination(workspace, dest_id))["status"] == "FAILING"

    await wait_until(failing)
    dest = await destination(workspace, dest_id)
    assert "dead letters" in dest["lastError"] and "HTTP 400" in dest["lastError"]
    # The first events of the stream (its audit_log.stream.created event among them).
    set_aside = [x["eventId"] for x in await dead_letters(workspace, dest_id)]
    assert len(set_aside) == MAX_SET_ASIDE
    assert [i for i in set_aside if i in ids] == ids[: len([i for i in set_aside if i in ids])]
    assert dest["lagEvents"] >= len(ids) - MAX_SET_ASIDE
    # Once fixed, an update retries at once and the list can be sent again.
    receiver.refuse = {}
    assert "errors" not in await workspace.gql(UPDATE, {"id": dest_id, "input": {"name": "ok"}})
    queued = await workspace.gql(RETRY, {"id": dest_id})
    assert queued["data"]["retryDeadLetters"] == MAX_SET_ASIDE
    secret = created["webhookSecret"]
    await wait_until(lambda: set(ids) <= set(delivered(receiver, secret)))

    async def emptied() -> bool:
        return await dead_letters(workspace, dest_id) == []

    await wait_until(emptied)
    assert (await destination(workspace, dest_id))["status"] == "ACTIVE"


async def test_a_splunk_400_about_the_channel_is_the_destinations_not_an_events(
    workspace: WorkspaceKeys, worker: StreamWorker
) -> None:
    hec = HecReceiver(
        token="hec-token-dl", use_ack=True
    )  # refuses requests without a channel: 400, code 10
    await hec.start()
    try:
        created = await create_destination(
            workspace, {"splunkHec": {"url": hec.url, "token": "hec-token-dl"}}
        )
        dest_id = created["destination"]["id"]
        await ingest(workspace, [event("file.uploaded") for _ in range(50)])

        async def failing() -> bool:
            return (await destination(workspace, dest_id))["status"] == "FAILING"

        await wait_until(failing)
        assert "Data channel is missing" in (await destination(workspace, dest_id))["lastError"]
        assert await dead_letters(workspace, dest_id) == []
    finally:
        await hec.stop()


async def test_dead_letters_belong_to_owners_and_admins_of_the_workspace(
    workspace: WorkspaceKeys, receiver: Receiver, services: Services
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/t"}})
    dest_id = created["destination"]["id"]
    assert (await workspace.gql(RETRY, {"id": dest_id}, key=workspace.owner)) == {
        "data": {"retryDeadLetters": 0}
    }
    other = await create_workspace_keys(services, workspace.http)
    for query, variables in ((RETRY, {"id": dest_id}), (RETRY, {"id": "not-a-uuid"})):
        error = error_of(await other.gql(query, variables))
        assert error["extensions"]["code"] == "NOT_FOUND"
    listed = await other.gql(DEAD_LETTERS)
    assert listed["data"]["streamingDestinations"] == []
    for query, variables in ((RETRY, {"id": dest_id}), (DEAD_LETTERS, None)):
        error = error_of(await workspace.gql(query, variables, key=workspace.member))
        assert error["extensions"]["code"] == "FORBIDDEN"
    too_many = await workspace.gql(
        "{ streamingDestinations { deadLetters(first: 501) { eventId } } }"
    )
    assert error_of(too_many)["extensions"]["code"] == "BAD_USER_INPUT"
    # Only the owner's (empty) retry is in the log, the refused attempts are not.
    retried = await audit_events(workspace, "audit_log.stream.dead_letters_retried")
    assert [r["metadata"] for r in retried] == [{"kind": "WEBHOOK", "queued": 0}]
