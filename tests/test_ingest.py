"""POST /v1/events: validation, all-or-nothing, idempotency, enrichment, partitions."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson

from auditlog.jcs import jcs_dumps
from auditlog.runtime import Services
from auditlog.services import keys as key_service
from tests.conftest import WorkspaceKeys, event

COUNT_QUERY = "SELECT count(*) FROM audit_events WHERE workspace_id = $1"


async def stored_count(services: Services, workspace_id: str, action: str | None = None) -> int:
    async with services.pool.acquire() as conn:
        if action:
            return int(await conn.fetchval(COUNT_QUERY + " AND action = $2", workspace_id, action))
        return int(await conn.fetchval(COUNT_QUERY, workspace_id))


async def test_batch_is_accepted_and_reports_ids(workspace: WorkspaceKeys) -> None:
    events = [event() for _ in range(3)]
    response = await workspace.ingest(events)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body == {"accepted": 3, "duplicates": 0, "ids": [e["id"] for e in events]}


async def test_event_without_id_gets_a_uuid(workspace: WorkspaceKeys) -> None:
    body = event()
    del body["id"]
    response = await workspace.ingest([body])
    assert response.status_code == 202
    (new_id,) = response.json()["ids"]
    assert uuid.UUID(new_id).version == 7


async def test_minimal_event_is_accepted_as_the_systems(workspace: WorkspaceKeys) -> None:
    """Only occurredAt and action are required (docs/ingest.md): an event without an
    actor is stored with a SYSTEM actor, and reads back like any other."""
    minimal = {
        "occurredAt": datetime.now(UTC).isoformat(),
        "action": "workspace.billing.plan_changed",
    }
    response = await workspace.ingest([minimal])
    assert response.status_code == 202, response.text
    (new_id,) = response.json()["ids"]
    body = await workspace.gql(
        "query($id: ID!) { auditEvent(id: $id) { actor { type id name email } targets { id } } }",
        {"id": new_id},
    )
    assert body["data"]["auditEvent"] == {
        "actor": {"type": "SYSTEM", "id": None, "name": None, "email": None},
        "targets": [],
    }
    refused = await workspace.ingest([{**minimal, "actor": "someone"}])
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "actor"


async def test_retried_batch_stores_nothing_new(
    workspace: WorkspaceKeys, services: Services
) -> None:
    events = [event("file.uploaded") for _ in range(5)]
    first = await workspace.ingest(events)
    second = await workspace.ingest(events)
    assert first.json()["accepted"] == 5
    assert second.status_code == 202
    assert second.json() == {"accepted": 0, "duplicates": 5, "ids": [e["id"] for e in events]}
    assert await stored_count(services, workspace.id, "file.uploaded") == 5


async def test_overlapping_batch_stores_only_its_new_events(
    workspace: WorkspaceKeys, services: Services
) -> None:
    """A batch that repeats some stored ids (the ledger's COPY fails on the first
    and is rolled back) stores exactly its new events, once, and keeps its order."""
    events = [event("file.permission.changed") for _ in range(8)]
    first = await workspace.ingest(events[:5])
    second = await workspace.ingest(events[3:])
    assert first.json()["accepted"] == 5
    assert second.status_code == 202
    assert second.json() == {
        "accepted": 3,
        "duplicates": 2,
        "ids": [e["id"] for e in events[3:]],
    }
    async with services.pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT id::text, count(*) AS n FROM audit_events"
            " WHERE workspace_id = $1 AND action = 'file.permission.changed' GROUP BY id",
            workspace.id,
        )
        ledger = await conn.fetchval(
            "SELECT count(*) FROM audit_event_ids WHERE workspace_id = $1 AND id = ANY($2::uuid[])",
            workspace.id,
            [e["id"] for e in events],
        )
    assert sorted(r["id"] for r in stored) == sorted(e["id"] for e in events)
    assert all(r["n"] == 1 for r in stored)
    assert ledger == 8


async def test_repeated_id_inside_one_batch_is_stored_once(
    workspace: WorkspaceKeys, services: Services
) -> None:
    one = event("folder.created")
    response = await workspace.ingest([one, dict(one)])
    assert response.json()["accepted"] == 1
    assert response.json()["duplicates"] == 1
    assert await stored_count(services, workspace.id, "folder.created") == 1


async def test_two_concurrent_identical_batches_store_one_copy(
    workspace: WorkspaceKeys, services: Services
) -> None:
    events = [event("file.deleted") for _ in range(200)]
    async with httpx.AsyncClient(base_url=str(workspace.http.base_url)) as other:
        responses = await asyncio.gather(
            workspace.ingest(events),
            other.post("/v1/events", json=events, headers=workspace.auth(workspace.ingest_key)),
        )
    assert all(r.status_code == 202 for r in responses)
    assert sorted(r.json()["accepted"] for r in responses) == [0, 200]
    assert await stored_count(services, workspace.id, "file.deleted") == 200


async def test_one_bad_event_in_ten_stores_none(
    workspace: WorkspaceKeys, services: Services
) -> None:
    events = [event("ai.workflow.created") for _ in range(10)]
    events[6]["actor"] = {"type": "ROBOT"}
    response = await workspace.ingest(events)
    assert response.status_code == 422
    assert response.json() == {
        "errors": [
            {"index": 6, "field": "actor.type", "message": "must be one of USER, SYSTEM, API_KEY"}
        ]
    }
    assert await stored_count(services, workspace.id, "ai.workflow.created") == 0


async def test_every_refusal_names_field_and_reason(workspace: WorkspaceKeys) -> None:
    future = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    cases = [
        ({"action": "user.teleported"}, "action"),
        ({"occurredAt": "yesterday"}, "occurredAt"),
        ({"occurredAt": "2026-11-28T10:00:00"}, "occurredAt"),
        ({"occurredAt": future}, "occurredAt"),
        ({"occurredAt": "0001-01-01T00:00:00+01:00"}, "occurredAt"),
        ({"occurredAt": "2026-W48-1T10:00:00Z"}, "occurredAt"),
        ({"actor": {"type": []}}, "actor.type"),
        ({"ipAddress": "fe80::1%x,=HYPERLINK(1)"}, "ipAddress"),
        ({"id": "not-a-uuid"}, "id"),
        ({"ipAddress": "999.1.1.1"}, "ipAddress"),
        ({"targets": [{"id": "x"}]}, "targets[0].type"),
        ({"metadata": {"blob": "x" * 33_000}}, "metadata"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"colour": "red"}, "colour"),
        ({"workspaceId": "someone-else"}, "workspaceId"),
    ]
    for overrides, field in cases:
        response = await workspace.ingest([event(**overrides)])
        assert response.status_code == 422, (overrides, response.text)
        errors = response.json()["errors"]
        assert errors[0]["index"] == 0
        assert errors[0]["field"] == field, (overrides, errors)
        assert errors[0]["message"]
    missing = event()
    del missing["occurredAt"]
    response = await workspace.ingest([missing])
    assert response.json()["errors"][0] == {
        "index": 0,
        "field": "occurredAt",
        "message": "is required",
    }


async def test_mail_events_never_store_message_content(
    workspace: WorkspaceKeys, services: Services
) -> None:
    for key in ("body", "content", "html", "text", "subject", "attachments"):
        response = await workspace.ingest(
            [event("mail.forwarding_rule.created", metadata={"rule": "r1", key: "secret"})]
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == f"metadata.{key}"
    nested = event("mailbox.created", metadata={"message": {"Subject": "hello"}})
    response = await workspace.ingest([nested])
    assert response.json()["errors"][0]["field"] == "metadata.message.Subject"
    assert await stored_count(services, workspace.id, "mail.forwarding_rule.created") == 0
    # Other categories may use those words freely.
    ok = await workspace.ingest([event("file.uploaded", metadata={"subject": "tax"})])
    assert ok.status_code == 202


async def test_malformed_json_is_400_and_oversize_is_413(workspace: WorkspaceKeys) -> None:
    headers = {**workspace.auth(workspace.ingest_key), "content-type": "application/json"}
    bad = await workspace.http.post("/v1/events", content=b"[{", headers=headers)
    assert bad.status_code == 400
    not_array = await workspace.http.post("/v1/events", content=b'{"a": 1}', headers=headers)
    assert not_array.status_code == 400
    big = b"[" + b" " * (5 * 1024 * 1024) + b"]"
    too_big = await workspace.http.post("/v1/events", content=big, headers=headers)
    assert too_big.status_code == 413
    too_many = await workspace.ingest([event() for _ in range(1001)])
    assert too_many.status_code == 413


async def test_ndjson_body(workspace: WorkspaceKeys, services: Services) -> None:
    events = [event("ai.api_key.used") for _ in range(3)]
    body = b"\n".join(orjson.dumps(e) for e in events) + b"\n"
    response = await workspace.http.post(
        "/v1/events",
        content=body,
        headers={
            **workspace.auth(workspace.ingest_key),
            "content-type": "application/x-ndjson",
        },
    )
    assert response.status_code == 202, response.text
    assert await stored_count(services, workspace.id, "ai.api_key.used") == 3


async def test_location_and_device_are_derived_and_stored(
    workspace: WorkspaceKeys, services: Services
) -> None:
    body = event(
        "file.uploaded",
        ipAddress="89.160.20.112",
        userAgent="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    )
    await workspace.ingest([body])
    unknown = event("file.uploaded", ipAddress="10.1.2.3", userAgent="curl/8.5.0")
    await workspace.ingest([unknown])
    async with services.pool.acquire() as conn:
        stored = orjson.loads(
            await conn.fetchval(
                "SELECT payload FROM audit_events WHERE workspace_id = $1 AND id = $2",
                workspace.id,
                uuid.UUID(body["id"]),
            )
        )
        other = orjson.loads(
            await conn.fetchval(
                "SELECT payload FROM audit_events WHERE workspace_id = $1 AND id = $2",
                workspace.id,
                uuid.UUID(unknown["id"]),
            )
        )
    assert stored["location"] == {
        "city": "Linköping",
        "region": "Östergötland County",
        "country": "Sweden",
        "countryCode": "SE",
        "latitude": 58.4167,
        "longitude": 15.6167,
    }
    assert stored["device"]["browser"] == "Chrome"
    assert stored["device"]["browserVersion"] == "131.0.0"
    assert stored["device"]["os"] == "Mac OS X"
    assert other["location"] is None  # a private address: no location, event still stored
    assert other["device"]["browser"] == "curl"


async def test_late_event_lands_in_its_months_partition(
    workspace: WorkspaceKeys, services: Services
) -> None:
    late = datetime.now(UTC) - timedelta(days=400)
    body = event("user.password.changed", occurredAt=late.isoformat())
    response = await workspace.ingest([body])
    assert response.status_code == 202
    async with services.pool.acquire() as conn:
        partition = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM audit_events WHERE workspace_id = $1 AND id = $2",
            workspace.id,
            uuid.UUID(body["id"]),
        )
    assert partition == f"audit_events_{late.year:04d}_{late.month:02d}"


async def test_payload_is_canonical_json(workspace: WorkspaceKeys, services: Services) -> None:
    body = event("file.share.created", metadata={"z": 1, "a": {"y": True, "b": None}})
    await workspace.ingest([body])
    async with services.pool.acquire() as conn:
        text = await conn.fetchval(
            "SELECT payload FROM audit_events WHERE workspace_id = $1 AND id = $2",
            workspace.id,
            uuid.UUID(body["id"]),
        )
    assert text.encode() == jcs_dumps(orjson.loads(text))  # RFC 8785, see tests/test_jcs.py
    assert '"metadata":{"a":{"b":null,"y":true},"z":1}' in text


async def test_service_actions_are_refused_from_every_key(
    workspace: WorkspaceKeys, services: Services
) -> None:
    """Only the service writes audit_log.* events: no key, not even a platform key,
    can forge one, and a refused batch stores nothing."""
    platform = await key_service.create_key(
        services.pool, services.ingestor, workspace_id=None, role="ingest"
    )
    actions = [
        "audit_log.api_key.revoked",
        "audit_log.export.created",
        "audit_log.stream.deleted",
        "audit_log.retention.purged",
        "audit_log.not_in_the_catalog",
    ]
    before = await stored_count(services, workspace.id)
    for action in actions:
        for key in (workspace.ingest_key, platform.key):
            batch = [event("file.uploaded"), event(action)]
            batch = [{**e, "workspaceId": workspace.id} for e in batch]
            response = await workspace.ingest(batch, key=key)
            assert response.status_code == 422, (action, response.text)
            (error,) = response.json()["errors"]
            assert (error["index"], error["field"]) == (1, "action"), error
            assert "audit_log.*" in error["message"] and "service" in error["message"]
    assert await stored_count(services, workspace.id) == before


async def test_a_nul_character_is_refused_naming_the_field(
    workspace: WorkspaceKeys, services: Services
) -> None:
    """PostgreSQL text cannot hold U+0000: a clear 422, never a 500, and nothing stored."""
    before = await stored_count(services, workspace.id)
    cases = [
        ("actor.id", event(actor={"type": "USER", "id": "u\x001"})),
        ("actor.email", event(actor={"type": "USER", "id": "u", "email": "a\x00@b.io"})),
        ("targets[0].id", event(targets=[{"type": "file", "id": "f\x00"}])),
    ]
    for field, bad in cases:
        response = await workspace.ingest([event(), bad])
        assert response.status_code == 422, (field, response.text)
        (error,) = response.json()["errors"]
        assert (error["index"], error["field"]) == (1, field), error
        assert "NUL" in error["message"]
    assert await stored_count(services, workspace.id) == before
