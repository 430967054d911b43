"""OCSF exports: JSON and NDJSON files of valid OCSF objects, in the order and
parts of the NATIVE ones; CSV refused; no proof bundle; NATIVE unchanged."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from auditlog.exports.links import ExportLinks
from auditlog.model import EventFilter, Principal
from auditlog.ocsf import to_ocsf
from auditlog.runtime import Services
from auditlog.services import exports as export_service
from tests.conftest import SECRET_KEY, WorkspaceKeys, event
from tests.exports_support import download
from tests.ocsf_support import assert_valid_ocsf

FIELDS = "id format eventFormat rowCount proofUrl files { part rowCount url }"
CREATE = f"""mutation ($input: CreateExportInput!) {{
  createExport(input: $input) {{ {FIELDS} }}
}}"""
EXPORT_EVENTS = """{ auditEvents(filter: {actions: ["audit_log.export.created"]}) {
  edges { node { payload } } } }"""
ACTIONS = ("user.login.failed", "file.share.created", "workspace.user.suspended", "ai.api_key.used")


async def _ingest_mix(workspace: WorkspaceKeys, target_id: str, count: int) -> list[str]:
    now = datetime.now(UTC)
    events = [
        event(
            ACTIONS[i % len(ACTIONS)],
            occurredAt=(now - timedelta(seconds=count - i)).isoformat(),
            targets=[{"type": "report", "id": target_id, "name": "Q3"}],
            metadata={"i": i},
        )
        for i in range(count)
    ]
    response = await workspace.ingest(events)
    assert response.status_code == 202, response.text
    return [e["id"] for e in reversed(events)]  # newest first, as exports are


async def _create(
    workspace: WorkspaceKeys, file_format: str, event_format: str | None, target_id: str
) -> dict[str, Any]:
    given: dict[str, Any] = {"format": file_format, "filter": {"targetId": target_id}}
    if event_format is not None:
        given["eventFormat"] = event_format
    body = await workspace.gql(CREATE, {"input": given})
    assert "errors" not in body, body
    export: dict[str, Any] = body["data"]["createExport"]
    return export


async def _stored(services: Services, workspace_id: str, ids: list[str]) -> dict[str, str]:
    async with services.pool.acquire() as conn:
        records = await conn.fetch(
            "SELECT id::text, payload FROM audit_events WHERE workspace_id = $1 AND id = ANY($2)",
            workspace_id,
            [uuid.UUID(i) for i in ids],
        )
    return {r["id"]: r["payload"] for r in records}


async def test_an_ocsf_json_export_downloads_valid_ocsf_objects(
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient
) -> None:
    ids = await _ingest_mix(workspace, "t-ocsf", 8)
    export = await _create(workspace, "JSON", "OCSF", "t-ocsf")
    assert (export["format"], export["eventFormat"], export["rowCount"]) == ("JSON", "OCSF", 8)
    assert export["proofUrl"] is None  # leaves hash the NATIVE events, not these
    response = await download(http, export["files"][0]["url"])
    assert response.headers["content-type"] == "application/json"
    objects = json.loads(response.content)
    assert [o["metadata"]["uid"] for o in objects] == ids
    stored = await _stored(services, workspace.id, ids)
    for obj in objects:
        assert_valid_ocsf(obj)
        assert obj == to_ocsf(orjson.loads(stored[obj["metadata"]["uid"]]))
    assert {o["class_uid"] for o in objects} == {3002, 6001, 3001, 6003}

    # No bundle, even through a link signed for one.
    links = ExportLinks(SECRET_KEY)
    expires = datetime.now(UTC) + timedelta(hours=1)
    proof = links.proof_url(str(http.base_url), workspace.id, uuid.UUID(export["id"]), expires)
    assert (await http.get(proof)).status_code == 404

    # The audit event says which form left.
    (edge,) = (await workspace.gql(EXPORT_EVENTS))["data"]["auditEvents"]["edges"]
    assert edge["node"]["payload"]["metadata"]["eventFormat"] == "OCSF"


async def test_ocsf_ndjson_and_parts_follow_the_native_ones(
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient
) -> None:
    ids = await _ingest_mix(workspace, "t-parts", 7)
    principal = Principal(workspace_id=workspace.id, role="admin", key_id="key_test")
    base, now = str(http.base_url), datetime.now(UTC)
    lines: dict[str, list[bytes]] = {}
    for event_format in ("NATIVE", "OCSF"):
        row = await export_service.create_export(
            services,
            principal,
            workspace.id,
            EventFilter(target_id="t-parts"),
            {},
            "NDJSON",
            event_format=event_format,
            part_size=3,
        )
        links = export_service.download_links(services, row, base, now)
        assert [x.row_count for x in links] == [3, 3, 1]
        contents = [(await download(http, x.url)).content for x in links]
        lines[event_format] = [line for c in contents for line in c.splitlines()]
        assert all(c.endswith(b"\n") for c in contents)
    native = [orjson.loads(line) for line in lines["NATIVE"]]
    ocsf = [orjson.loads(line) for line in lines["OCSF"]]
    assert [e["id"] for e in native] == ids == [o["metadata"]["uid"] for o in ocsf]
    for obj, stored in zip(ocsf, native, strict=True):
        assert_valid_ocsf(obj)
        assert obj == to_ocsf(stored)


async def test_native_stays_the_default_and_byte_identical(
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient
) -> None:
    ids = await _ingest_mix(workspace, "t-native", 4)
    export = await _create(workspace, "JSON", None, "t-native")
    assert export["eventFormat"] == "NATIVE" and export["proofUrl"] is not None
    content = (await download(http, export["files"][0]["url"])).content
    stored = await _stored(services, workspace.id, ids)
    assert content == ("[\n" + ",\n".join(stored[i] for i in ids) + "\n]\n").encode()
    ndjson = await _create(workspace, "NDJSON", "NATIVE", "t-native")
    content = (await download(http, ndjson["files"][0]["url"])).content
    assert content == "".join(stored[i] + "\n" for i in ids).encode()


async def test_ocsf_csv_is_refused_naming_event_format(
    workspace: WorkspaceKeys, http: httpx.AsyncClient
) -> None:
    body = await workspace.gql(CREATE, {"input": {"format": "CSV", "eventFormat": "OCSF"}})
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "input.eventFormat"
    query = (
        '{ auditEvents(filter: {actions: ["audit_log.export.created"]}) { edges { node { id } } } }'
    )
    assert (await workspace.gql(query))["data"]["auditEvents"]["edges"] == []
    # An empty OCSF export is an empty array, as a NATIVE one.
    empty = await _create(workspace, "JSON", "OCSF", "nothing-has-this-target")
    assert (await download(http, empty["files"][0]["url"])).content == b"[\n]\n"
