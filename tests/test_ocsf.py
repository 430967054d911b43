"""The OCSF form: every catalog action mapped, once, as docs/ocsf.md shows it, and
every action's OCSF form of real stored events valid against the official schema."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from auditlog.catalog import CATALOG, CATEGORY_OF
from auditlog.ingest.validate import Actor, EventIn, Target, parse_ip
from auditlog.ocsf import MAPPING, OCSF_VERSION, PRODUCT, Subject, epoch_ms, to_ocsf
from auditlog.runtime import Services
from auditlog.services.streams import test_event as destination_test_event
from auditlog.storage.streams import DestinationRow
from tests.conftest import WorkspaceKeys, event
from tests.ocsf_support import (
    NEWEST_VERSION,
    assert_valid_ocsf,
    class_schema,
    ocsf_errors,
    raw_schema,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "ocsf.md"
RICH_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"
RICH_TARGETS = [
    {"type": "user", "id": "u_2", "name": "Grace Hopper"},
    {"type": "file", "id": "f_9", "name": "q3-report.pdf"},
    {"type": "folder", "id": None, "name": None},
]


def test_the_table_maps_every_catalog_action_once_in_catalog_order() -> None:
    assert [m.action for m in MAPPING] == [e.action for e in CATALOG]
    for m in MAPPING:
        assert m.type_uid == m.cls.uid * 100 + m.activity_id
        assert m.cls.category_uid == m.cls.uid // 1000


def test_classes_and_activities_are_the_official_ones() -> None:
    """Uids, names and activity captions as the chosen version's schema defines them."""
    schema = raw_schema()
    assert schema["version"] == OCSF_VERSION
    classes = {c["uid"]: c for c in schema["classes"].values()}
    for m in MAPPING:
        official = classes[m.cls.uid]
        assert official["caption"] == m.cls.name
        assert official["category_name"] == m.cls.category_name
        activities = official["attributes"]["activity_id"]["enum"]
        assert str(m.activity_id) in activities, m
        if m.activity_id != 99:  # Other names its own activity
            assert activities[str(m.activity_id)]["caption"] == m.activity_name
    # What the validation rests on is itself a valid draft 2020-12 schema (about 1 s a class).
    Draft202012Validator.check_schema(class_schema(OCSF_VERSION, "authentication"))


def _doc_rows() -> list[list[str]]:
    text = DOC.read_text()
    section = text.split("## The mapping", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows]


def test_docs_show_the_same_table() -> None:
    expected = [
        [
            m.action,
            f"{m.cls.name} ({m.cls.uid})",
            f"{m.activity_name} ({m.activity_id})",
            str(m.type_uid),
            "2 Failure" if m.failure else "1 Success",
        ]
        for m in MAPPING
    ]
    assert _doc_rows() == expected
    assert f"OCSF {OCSF_VERSION}" in DOC.read_text()
    for subject in Subject:
        assert subject.value in DOC.read_text(), subject


def test_time_is_exact_milliseconds() -> None:
    assert epoch_ms("1970-01-01T00:00:00.000999Z") == 0
    assert epoch_ms("2026-11-28T10:00:00.123999Z") == 1795860000123
    assert epoch_ms("1999-12-31T23:59:59.999999Z") == 946684799999


def _service_event(ws: str, action: str, rich: bool) -> EventIn:
    """An audit_log.* event as the service writes it (clients cannot send these)."""
    actor = (
        Actor("USER", "u_1", "Ada Lovelace", "ada@acme.io")
        if rich
        else Actor("SYSTEM", None, None, None)
    )
    return EventIn(
        id=uuid.uuid4(),
        id_given=True,
        workspace_id=ws,
        occurred_at=datetime.now(UTC),
        action=action,
        category=CATEGORY_OF[action],
        actor=actor,
        targets=tuple(Target(t["type"], t["id"], t["name"]) for t in RICH_TARGETS) if rich else (),
        ip=parse_ip("81.2.69.142") if rich else None,
        user_agent=RICH_UA if rich else None,
        metadata={"to": "admin", "nested": {"x": None}} if rich else {},
    )


async def _stored_every_way(workspace: WorkspaceKeys, services: Services) -> list[dict[str, Any]]:
    """Each catalog action stored three ways: rich (every field, a located address,
    a user target, one OCSF cannot place), sparse (only what is required) and odd
    (an API key known by an address OCSF's email_t refuses, an unlocated IPv6)."""
    client: list[dict[str, Any]] = []
    service: list[EventIn] = []
    for entry in CATALOG:
        if entry.action.startswith("audit_log."):
            service += [_service_event(workspace.id, entry.action, r) for r in (True, False)]
            continue
        rich = event(
            entry.action,
            targets=RICH_TARGETS,
            metadata={"reason": "invalid_password", "to": "admin", "sizeBytes": 12},
        )
        sparse = {"action": entry.action, "occurredAt": datetime.now(UTC).isoformat()}
        odd = event(
            entry.action,
            actor={"type": "API_KEY", "email": "jörg@bücher.example"},
            targets=[{"type": "user", "id": None, "name": None}],
            ipAddress="2001:db8::7",
            userAgent=None,
            metadata={},
        )
        client += [rich, sparse, odd]
    response = await workspace.ingest(client)
    assert response.status_code == 202, response.text
    ids = [uuid.UUID(i) for i in response.json()["ids"]] + [e.id for e in service]
    await services.ingestor.append(service, workspace.id)
    async with services.pool.acquire() as conn:
        texts = await conn.fetch(
            "SELECT payload FROM audit_events WHERE workspace_id = $1 AND id = ANY($2)",
            workspace.id,
            ids,
        )
    assert len(texts) == len(ids)
    return [orjson.loads(r["payload"]) for r in texts]


async def test_every_action_of_real_stored_events_is_valid_ocsf(
    workspace: WorkspaceKeys, services: Services
) -> None:
    stored = await _stored_every_way(workspace, services)
    assert {p["action"] for p in stored} == {e.action for e in CATALOG}
    for payload in stored:
        ocsf = to_ocsf(payload)
        assert_valid_ocsf(ocsf, OCSF_VERSION, NEWEST_VERSION)
        assert ocsf["type_uid"] == ocsf["class_uid"] * 100 + ocsf["activity_id"]
        assert ocsf["metadata"]["uid"] == payload["id"]
        assert ocsf["time"] == epoch_ms(payload["occurredAt"])


def _destination_test_payload() -> dict[str, Any]:
    """The event testStreamingDestination sends, as the service builds it."""
    row = DestinationRow(
        workspace_id="ws-1",
        id=uuid.uuid4(),
        name="siem",
        kind="WEBHOOK",
        categories=[],
        config={},
        secrets=b"",
        status="ACTIVE",
        generation=1,
        cursor_xid=0,
        cursor_seq=0,
        last_delivered_at=None,
        last_error=None,
        attempts=0,
        retry_at=None,
        created_at=datetime.now(UTC),
        checkpoint_size=0,
        checkpoint_delivered_at=None,
        format="OCSF",
    )
    payload: dict[str, Any] = orjson.loads(destination_test_event(row).payload)
    return payload


def test_the_test_event_outside_the_catalog_is_valid_ocsf() -> None:
    payload = _destination_test_payload()
    ocsf = to_ocsf(payload)
    assert_valid_ocsf(ocsf, OCSF_VERSION, NEWEST_VERSION)
    assert (ocsf["class_uid"], ocsf["activity_id"], ocsf["activity_name"]) == (3004, 99, "Other")
    assert ocsf["entity"] == {"type": "streaming_destination", **_uid_name(payload["targets"][0])}


def _uid_name(target: dict[str, Any]) -> dict[str, Any]:
    return {"uid": target["id"], "name": target["name"]}


async def test_fields_land_where_docs_say(workspace: WorkspaceKeys, services: Services) -> None:
    sent = event(
        "user.login.failed",
        occurredAt="2026-11-28T10:00:00.123456Z",
        targets=RICH_TARGETS,
        metadata={"reason": "invalid_password"},
    )
    response = await workspace.ingest([sent])
    assert response.status_code == 202, response.text
    async with services.pool.acquire() as conn:
        text = await conn.fetchval(
            "SELECT payload FROM audit_events WHERE workspace_id = $1 AND id = $2::uuid",
            workspace.id,
            sent["id"],
        )
    native = orjson.loads(text)
    ocsf = to_ocsf(native)
    assert (ocsf["class_uid"], ocsf["activity_id"], ocsf["type_uid"]) == (3002, 1, 300201)
    assert (ocsf["status_id"], ocsf["status"], ocsf["status_detail"]) == (
        2,
        "Failure",
        "invalid_password",
    )
    assert ocsf["time"] == 1795860000123
    assert ocsf["metadata"]["uid"] == sent["id"]
    assert ocsf["metadata"]["version"] == OCSF_VERSION
    assert ocsf["metadata"]["product"] == PRODUCT
    assert ocsf["metadata"]["tenant_uid"] == workspace.id
    assert ocsf["metadata"]["event_code"] == "user.login.failed"
    assert ocsf["metadata"]["logged_time"] == epoch_ms(native["receivedAt"])
    user = {"uid": "u_1", "name": "Ada Lovelace", "email_addr": "ada@acme.io"}
    assert ocsf["actor"]["user"] == {**user, "type_id": 1, "type": "User"}
    assert ocsf["user"] == ocsf["actor"]["user"]  # Authentication: the one who signs in
    assert ocsf["src_endpoint"] == {
        "ip": "81.2.69.142",
        "location": {
            "city": "London",
            "region": "England",
            "country": "GB",
            "lat": 51.5142,
            "long": -0.0931,
        },
    }
    assert ocsf["http_request"] == {"user_agent": sent["userAgent"]}
    assert ocsf["unmapped"] == {
        "category": "AUTHENTICATION",
        "location": {"country": "United Kingdom"},
        "targets": RICH_TARGETS,
        "device": native["device"],
        "metadata": {"reason": "invalid_password"},
        "anomalies": native["anomalies"],
    }
    assert native["anomalies"] and native["device"]
    # The validation refuses what the schema refuses: the check has teeth.
    assert ocsf_errors({**ocsf, "target": "x"}) and ocsf_errors({**ocsf, "time": "now"})
    assert ocsf_errors({**ocsf, "type_uid": 600301}) and ocsf_errors({**ocsf, "activity_id": 42})
    assert_valid_ocsf(ocsf)


def test_targets_go_where_each_class_says() -> None:
    base = {
        "id": "e1",
        "workspaceId": "ws-1",
        "occurredAt": "2026-11-28T10:00:00.000000Z",
        "receivedAt": "2026-11-28T10:00:00.000000Z",
        "category": "WORKSPACE",
        "actor": {"type": "USER", "id": "u_1", "name": None, "email": None},
        "targets": RICH_TARGETS,
        "metadata": {"from": "member", "to": "admin"},
    }
    file_target = {"type": "file", "uid": "f_9", "name": "q3-report.pdf"}
    user_target = {"type": "user", "uid": "u_2", "name": "Grace Hopper"}
    unplaced = [RICH_TARGETS[2]]

    role = to_ocsf({**base, "action": "workspace.user.role_changed"})
    assert role["user"] == {"uid": "u_2", "name": "Grace Hopper"}
    assert role["privileges"] == ["admin"]
    assert role["unmapped"]["targets"] == RICH_TARGETS[1:]

    suspended = to_ocsf({**base, "action": "workspace.user.suspended", "targets": []})
    assert suspended["user"] == suspended["actor"]["user"]  # no user target: the actor

    entity = to_ocsf({**base, "action": "mailbox.created"})
    assert entity["entity"] == user_target  # the first target
    assert entity["unmapped"]["targets"] == RICH_TARGETS[1:]
    plan = to_ocsf({**base, "action": "workspace.billing.plan_changed", "targets": []})
    assert plan["entity"] == {"type": "workspace", "uid": "ws-1"}

    web = to_ocsf({**base, "action": "file.share.created"})
    assert web["web_resources"] == [user_target, file_target]
    assert web["unmapped"]["targets"] == unplaced

    api = to_ocsf({**base, "action": "ai.api_key.used"})
    assert api["resources"] == [user_target, file_target]
    assert api["api"] == {"operation": "ai.api_key.used"}
    assert api["src_endpoint"] == {"name": "unknown"}  # no address: API Activity needs one
    for ocsf in (role, suspended, entity, plan, web, api):
        assert_valid_ocsf(ocsf)


def test_docs_name_every_native_field() -> None:
    """Every field of the stored payload has its line in the field mapping of docs/ocsf.md."""
    section = DOC.read_text().split("## Fields", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([a-zA-Z.]+)`", section, flags=re.M))
    payload = _destination_test_payload()
    fields = {k for k in payload if k != "actor"} | {f"actor.{k}" for k in payload["actor"]}
    assert fields <= named, fields - named
