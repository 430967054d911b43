"""Exports: content of every format, signed links, permissions, isolation, audit."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import jwt
import orjson
import pytest

from auditlog.auth import Principal
from auditlog.config import Settings
from auditlog.errors import ConfigError
from auditlog.exports import service as export_service
from auditlog.exports.links import ExportLinks
from auditlog.runtime import Services, download_slots_for
from auditlog.storage.events import EventFilter
from tests.conftest import (
    JWT_SECRET,
    SECRET_KEY,
    WorkspaceKeys,
    create_workspace_keys,
    event,
    make_settings,
    start_service,
    stop_service,
)
from tests.exports_support import LIST, ONE, create_export, csv_rows, download

# The documented, stable column order (docs/exports.md), spelled out on purpose.
HEADER_LINE = (
    "id,occurredAt,category,action,actorType,actorId,actorName,actorEmail,targets,"
    "ipAddress,city,region,country,browser,os,device,userAgent,metadata"
)
HEADER = HEADER_LINE.split(",")
TARGET = {"type": "report", "id": "t-known", "name": "@SUM(A1)"}
PAYLOADS = """query ($filter: AuditEventFilter) {
  auditEvents(filter: $filter, first: 100) { edges { node { payload } } }
}"""


def _known_events() -> list[dict[str, Any]]:
    now = datetime.now(UTC).replace(microsecond=123456)
    return [
        event(
            "user.login.success",
            occurredAt=(now - timedelta(minutes=3)).isoformat(),
            targets=[TARGET],
        ),
        event(
            "file.uploaded",
            occurredAt=(now - timedelta(minutes=2)).isoformat(),
            actor={"type": "USER", "id": "-1", "name": '=HYPERLINK("http://x.io","y")'},
            targets=[TARGET],
            userAgent="+cmd|' /C calc'!A0",
            metadata={"note": 'line1\nline2, "quoted"', "n": -5, "city": "Zürich"},
        ),
        event(
            "workspace.user.invited",
            occurredAt=(now - timedelta(minutes=1)).isoformat(),
            actor={"type": "SYSTEM", "id": "scheduler"},
            targets=[TARGET],
            ipAddress=None,
            userAgent=None,
            metadata={},
        ),
    ]


@pytest.fixture
async def known(workspace: WorkspaceKeys) -> list[dict[str, Any]]:
    events = _known_events()
    response = await workspace.ingest(events)
    assert response.status_code == 202, response.text
    return list(reversed(events))  # newest first, the order of every export


async def test_csv_holds_the_documented_columns_newest_first(
    workspace: WorkspaceKeys, known: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    export = await create_export(workspace, "CSV", {"targetId": "t-known"})
    assert export["status"] == "READY"
    assert export["rowCount"] == 3
    assert export["filter"] == {"targetId": "t-known"}
    assert [(f["part"], f["rowCount"]) for f in export["files"]] == [(1, 3)]
    response = await download(http, export["files"][0]["url"])
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="auditlog-' + workspace.id)
    assert disposition.endswith('-part001-of-001.csv"')
    assert response.content.startswith(HEADER_LINE.encode() + b"\r\n")  # RFC 4180 line ends

    header, *rows = csv_rows(response.content)
    assert header == HEADER
    by_column = [dict(zip(HEADER, row, strict=True)) for row in rows]
    assert [r["id"] for r in by_column] == [e["id"] for e in known]
    invited, uploaded, login = by_column
    assert login["occurredAt"] == known[2]["occurredAt"].replace("+00:00", "Z")
    assert login["occurredAt"].endswith(".123456Z")
    assert (login["category"], login["action"]) == ("AUTHENTICATION", "user.login.success")
    assert (login["actorType"], login["actorId"], login["actorEmail"]) == (
        "USER",
        "u_1",
        "ada@acme.io",
    )
    assert (login["city"], login["region"], login["country"]) == (
        "London",
        "England",
        "United Kingdom",
    )
    assert login["browser"] == "Firefox"
    assert login["ipAddress"] == "81.2.69.142"
    assert json.loads(login["targets"]) == [TARGET]
    assert json.loads(login["metadata"]) == {"reason": "test"}

    assert uploaded["actorName"] == "'" + '=HYPERLINK("http://x.io","y")'
    assert uploaded["actorId"] == "'-1"
    assert uploaded["userAgent"] == "'+cmd|' /C calc'!A0"
    assert json.loads(uploaded["metadata"]) == {
        "city": "Zürich",
        "n": -5,
        "note": 'line1\nline2, "quoted"',
    }

    assert invited["ipAddress"] == invited["city"] == invited["userAgent"] == ""
    assert invited["actorType"] == "SYSTEM"
    assert json.loads(invited["metadata"]) == {}


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@x", "\tx", "\rx"])
async def test_every_formula_start_is_neutralised(
    workspace: WorkspaceKeys, http: httpx.AsyncClient, value: str
) -> None:
    response = await workspace.ingest(
        [event("file.deleted", actor={"type": "USER", "id": "u", "name": value})]
    )
    assert response.status_code == 202, response.text
    export = await create_export(workspace, "CSV", {"actions": ["file.deleted"]})
    content = (await download(http, export["files"][0]["url"])).content
    header, row = csv_rows(content)
    assert row[header.index("actorName")] == "'" + value


async def test_json_is_the_stored_payloads_verbatim(
    workspace: WorkspaceKeys, known: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    flt = {"targetId": "t-known"}
    export = await create_export(workspace, "JSON", flt)
    response = await download(http, export["files"][0]["url"])
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].endswith('-part001-of-001.json"')
    exported = json.loads(response.content)
    body = await workspace.gql(PAYLOADS, {"filter": flt})
    shown = [edge["node"]["payload"] for edge in body["data"]["auditEvents"]["edges"]]
    assert exported == shown
    assert [p["id"] for p in exported] == [e["id"] for e in known]
    for payload in shown:  # the canonical text, byte for byte
        assert orjson.dumps(payload, option=orjson.OPT_SORT_KEYS) in response.content


async def test_ndjson_is_one_payload_a_line(
    workspace: WorkspaceKeys, known: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    export = await create_export(workspace, "NDJSON", {"targetId": "t-known"})
    response = await download(http, export["files"][0]["url"])
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.content.decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [e["id"] for e in known]


async def test_empty_result_is_one_empty_file(
    workspace: WorkspaceKeys, http: httpx.AsyncClient
) -> None:
    export = await create_export(workspace, "JSON", {"actorId": "nobody"})
    assert export["rowCount"] == 0
    assert [(f["part"], f["rowCount"]) for f in export["files"]] == [(1, 0)]
    assert json.loads((await download(http, export["files"][0]["url"])).content) == []
    export = await create_export(workspace, "CSV", {"actorId": "nobody"})
    assert csv_rows((await download(http, export["files"][0]["url"])).content) == [HEADER]


async def test_export_writes_an_audit_event_naming_the_caller(
    workspace: WorkspaceKeys, known: list[dict[str, Any]]
) -> None:
    export = await create_export(workspace, "CSV", {"targetId": "t-known"}, workspace.owner)
    body = await workspace.gql(PAYLOADS, {"filter": {"actions": ["audit_log.export.created"]}})
    payloads = [edge["node"]["payload"] for edge in body["data"]["auditEvents"]["edges"]]
    assert len(payloads) == 1
    recorded = payloads[0]
    owner_key_id = workspace.owner.removeprefix("alk_").split(".")[0]
    assert recorded["actor"]["type"] == "API_KEY"
    assert recorded["actor"]["id"] == owner_key_id
    assert recorded["metadata"]["exportId"] == export["id"]
    assert recorded["metadata"]["rowCount"] == 3
    assert recorded["metadata"]["filter"] == {"targetId": "t-known"}
    assert recorded["metadata"]["format"] == "CSV"


async def test_export_and_exports_list_newest_first(
    workspace: WorkspaceKeys, known: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    created = [await create_export(workspace, "CSV", {"targetId": "t-known"}) for _ in range(3)]
    ids = [e["id"] for e in reversed(created)]
    page = await workspace.gql(LIST, {"first": 2})
    assert [e["id"] for e in page["data"]["exports"]] == ids[:2]
    page = await workspace.gql(LIST, {"first": 2, "after": ids[1]})
    assert [e["id"] for e in page["data"]["exports"]] == ids[2:]

    again = (await workspace.gql(ONE, {"id": ids[0]}))["data"]["export"]
    assert again["rowCount"] == 3 and again["status"] == "READY"
    assert again["createdAt"] == created[-1]["createdAt"]
    rows = csv_rows((await download(http, again["files"][0]["url"])).content)
    assert len(rows) == 1 + 3


def _expect_code(body: dict[str, Any], code: str) -> dict[str, Any]:
    assert body.get("errors"), body
    extensions: dict[str, Any] = body["errors"][0]["extensions"]
    assert extensions["code"] == code, body
    return extensions


async def test_member_and_ingest_keys_are_forbidden(
    workspace: WorkspaceKeys, known: list[dict[str, Any]]
) -> None:
    export = await create_export(workspace, "CSV", None)
    create = """mutation { createExport(input: {format: CSV}) { id } }"""
    for key in (workspace.member, workspace.ingest_key):
        _expect_code(await workspace.gql(create, key=key), "FORBIDDEN")
        _expect_code(await workspace.gql(ONE, {"id": export["id"]}, key), "FORBIDDEN")
        _expect_code(await workspace.gql(LIST, key=key), "FORBIDDEN")


async def test_another_workspace_never_sees_an_export(
    workspace: WorkspaceKeys,
    known: list[dict[str, Any]],
    services: Services,
    http: httpx.AsyncClient,
) -> None:
    mine = await create_export(workspace, "JSON", None)
    other = await create_workspace_keys(services, http)
    body = await other.gql(ONE, {"id": mine["id"]})
    assert body == {"data": {"export": None}}
    assert body == await other.gql(ONE, {"id": str(uuid.uuid4())})
    theirs = await create_export(other, "JSON", None)
    listed = (await other.gql(LIST))["data"]["exports"]
    assert [e["id"] for e in listed] == [theirs["id"]]
    rows = json.loads((await download(http, theirs["files"][0]["url"])).content)
    assert rows and {r["workspaceId"] for r in rows} == {other.id}
    assert not {e["id"] for e in known} & {r["id"] for r in rows}


async def test_invalid_arguments_are_named(workspace: WorkspaceKeys) -> None:
    create = "mutation ($input: CreateExportInput!) { createExport(input: $input) { id } }"
    cases = [
        ({"ipAddress": "not-an-ip"}, "input.filter.ipAddress"),
        (
            {"occurredFrom": "2026-11-02T00:00:00Z", "occurredTo": "2026-11-01T00:00:00Z"},
            "input.filter.occurredTo",
        ),
        ({"actions": ["no.such.action"]}, "input.filter.actions"),
    ]
    for flt, argument in cases:
        body = await workspace.gql(create, {"input": {"format": "CSV", "filter": flt}})
        assert _expect_code(body, "BAD_USER_INPUT")["argument"] == argument
    body = await workspace.gql(create, {"input": {"format": "XLSX"}})
    _expect_code(body, "BAD_USER_INPUT")
    assert "XLSX" in body["errors"][0]["message"]
    for variables, argument in (({"after": "nope"}, "after"), ({"first": 101}, "first")):
        body = await workspace.gql(LIST, variables)
        assert _expect_code(body, "BAD_USER_INPUT")["argument"] == argument
    listed = await workspace.gql(LIST)
    assert listed["data"]["exports"] == []  # nothing was created by the refusals


def _altered(url: str, *, path: str | None = None, **query: str) -> str:
    parts = urlsplit(url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    params.update(query)
    encoded = "&".join(f"{k}={v}" for k, v in params.items())
    return urlunsplit(parts._replace(path=path or parts.path, query=encoded))


async def test_altered_or_expired_links_are_refused_alike(
    workspace: WorkspaceKeys, known: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    export = await create_export(workspace, "CSV", None)
    url = export["files"][0]["url"]
    path = urlsplit(url).path
    expires = parse_qs(urlsplit(url).query)["expires"][0]
    now = datetime.now(UTC)
    assert 3590 <= int(expires) - now.timestamp() <= 3600
    signature = parse_qs(urlsplit(url).query)["signature"][0]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    links = ExportLinks(SECRET_KEY)
    base = url.split("/v1/")[0]
    export_id = uuid.UUID(export["id"])
    refused = [
        _altered(url, signature=flipped),
        _altered(url, expires=str(int(expires) + 3600)),
        _altered(url, path=path[:-1] + "2"),
        _altered(url, path=path.replace(export["id"], str(uuid.uuid4()))),
        _altered(url, path=path.replace(workspace.id, workspace.id + "x")),
        url.split("?")[0],
        links.url(base, workspace.id, export_id, 1, now - timedelta(seconds=1)),
        links.url(base, workspace.id, uuid.uuid4(), 1, now - timedelta(seconds=1)),
        ExportLinks("another-secret-key-0123456789").url(
            base, workspace.id, export_id, 1, now + timedelta(hours=1)
        ),
    ]
    answers = [await http.get(link) for link in refused]
    assert [a.status_code for a in answers] == [403] * len(refused)
    assert len({a.content for a in answers}) == 1  # nothing tells whether the export exists
    beyond = links.url(base, workspace.id, export_id, 2, now + timedelta(hours=1))
    assert (await http.get(beyond)).status_code == 404
    assert (await http.get(url)).status_code == 200
    head = await http.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers.get("content-length") != "0"
    assert head.headers["content-disposition"].endswith('-part001-of-001.csv"')
    assert (await http.head(refused[0])).status_code == 403


def test_link_lifetime_is_configurable() -> None:
    settings = Settings.from_env({"AUDITLOG_EXPORT_LINK_TTL_SECONDS": "5"})
    assert settings.export_link_ttl_seconds == 5
    assert Settings.from_env({}).export_link_ttl_seconds == 3600
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError, match="AUDITLOG_EXPORT_LINK_TTL_SECONDS"):
            Settings.from_env({"AUDITLOG_EXPORT_LINK_TTL_SECONDS": bad})


def test_a_short_secret_key_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="auditlog.config"):
        settings = Settings.from_env({"AUDITLOG_SECRET_KEY": "short-secret"})
    assert settings.secret_key == "short-secret"
    assert "12 characters long" in caplog.text
    assert "short-secret" not in caplog.text  # the key itself is never logged


def test_public_url_is_checked() -> None:
    env = {"AUDITLOG_PUBLIC_URL": "https://audit.example.com/logs/"}
    assert Settings.from_env(env).public_url == "https://audit.example.com/logs"
    assert Settings.from_env({}).public_url is None
    for bad in ("audit.example.com", "ftp://audit.example.com", "https://a.example/?x=1"):
        with pytest.raises(ConfigError, match="AUDITLOG_PUBLIC_URL"):
            Settings.from_env({"AUDITLOG_PUBLIC_URL": bad})


async def test_links_start_with_the_public_url(database_url: str, data_dir: Path) -> None:
    """Behind a proxy that serves the API under /audit, links carry that address;
    the proxy strips the prefix and the link, unchanged otherwise, downloads."""
    public = "https://audit.example.com/audit"
    running = await start_service(make_settings(database_url, data_dir, public_url=public))
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
            ws = await create_workspace_keys(running.services, http)
            assert (await ws.ingest([event("file.uploaded")])).status_code == 202
            export = await create_export(ws, "CSV", None)
            url = export["files"][0]["url"]
            assert url.startswith(public + "/v1/exports/" + ws.id + "/")
            behind_proxy = running.base_url + url.removeprefix(public)
            response = await download(http, behind_proxy)
        assert len(csv_rows(response.content)) == 1 + export["rowCount"]
    finally:
        await stop_service(running)


@pytest.mark.parametrize("events", [4, 5])
async def test_parts_split_exactly_at_the_part_size(
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient, events: int
) -> None:
    batch = [event(targets=[{"type": "t", "id": "split"}]) for _ in range(events)]
    assert (await workspace.ingest(batch)).status_code == 202
    principal = Principal(workspace_id=workspace.id, role="admin", key_id="key_test")
    row = await export_service.create_export(
        services, principal, workspace.id, EventFilter(target_id="split"), {}, "JSON", part_size=2
    )
    links = export_service.download_links(services, row, str(http.base_url), datetime.now(UTC))
    expected = [2, 2] if events == 4 else [2, 2, 1]
    assert [x.row_count for x in links] == expected
    ids = [p["id"] for x in links for p in json.loads((await download(http, x.url)).content)]
    assert sorted(ids) == sorted(e["id"] for e in batch)


async def test_console_session_is_the_actor_of_its_export(
    workspace: WorkspaceKeys, known: list[dict[str, Any]]
) -> None:
    claims = {
        "sub": "user-42",
        "email": "grace@acme.io",
        "workspace": workspace.id,
        "role": "owner",
        "exp": datetime.now(UTC) + timedelta(minutes=5),
    }
    session = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    export = await create_export(workspace, "NDJSON", {"targetId": "t-known"}, session)
    body = await workspace.gql(PAYLOADS, {"filter": {"actions": ["audit_log.export.created"]}})
    (recorded,) = [edge["node"]["payload"] for edge in body["data"]["auditEvents"]["edges"]]
    assert recorded["actor"]["type"] == "USER"
    assert (recorded["actor"]["id"], recorded["actor"]["email"]) == ("user-42", "grace@acme.io")
    assert recorded["metadata"]["exportId"] == export["id"]


async def test_downloads_past_the_slots_wait_without_taking_the_pool(
    workspace: WorkspaceKeys, services: Services
) -> None:
    """Each streaming download holds a pooled connection: past the process's
    download slots, another download waits for one to end, and the API keeps
    answering meanwhile."""
    for _ in range(3):
        response = await workspace.ingest([event("file.uploaded") for _ in range(700)])
        assert response.status_code == 202, response.text
    export = await create_export(workspace, "NDJSON", {"actions": ["file.uploaded"]})
    row = await export_service.find_export(services, workspace.id, uuid.UUID(export["id"]))
    assert row is not None and row.plan.row_count == 2100
    slots = download_slots_for(10)  # the test service's pool holds 10 connections
    streams = [export_service.stream_part(services, row, 1) for _ in range(slots)]
    extra = export_service.stream_part(services, row, 1)
    try:
        for stream in streams:
            assert len(await anext(stream)) == 2000  # suspended mid-part, connection held
        waiting = asyncio.ensure_future(anext(extra))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        body = await workspace.gql("{ workspace { id } }")
        assert body["data"]["workspace"]["id"] == workspace.id
        await streams[0].aclose()  # one download ends: the waiting one goes on
        assert len(await asyncio.wait_for(waiting, 10)) == 2000
    finally:
        for stream in [*streams, extra]:
            await stream.aclose()


async def test_a_download_closed_at_once_gives_its_connection_back_clean(
    workspace: WorkspaceKeys, services: Services
) -> None:
    """Closed right after its first batch, while the next is still being fetched,
    a download ends its transaction before its connection goes back to the pool
    (it used to reach the pool busy: "another operation is in progress")."""
    for _ in range(5):
        response = await workspace.ingest([event("file.uploaded") for _ in range(1000)])
        assert response.status_code == 202, response.text
    export = await create_export(workspace, "NDJSON", {"actions": ["file.uploaded"]})
    row = await export_service.find_export(services, workspace.id, uuid.UUID(export["id"]))
    assert row is not None
    for _ in range(5):
        stream = export_service.stream_part(services, row, 1)
        first = await anext(stream)  # the next 2,000 rows are being fetched meanwhile
        assert len(first) == 2000
        await stream.aclose()
    async with services.pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT 1") == 1
