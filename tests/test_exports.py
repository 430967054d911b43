"""Exports: content of every format, signed links, permissions, isolation, audit."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import jwt
import orjson
import pytest

from auditlog.config import Settings
from auditlog.errors import ConfigError
from auditlog.exports.links import ExportLinks
from auditlog.integrity.bundle import verify_bundle
from auditlog.integrity.notes import NoteSigner, VerifierKey, open_checkpoint
from auditlog.model import EventFilter, Principal
from auditlog.runtime import Services, download_slots_for
from auditlog.services import exports as export_service
from auditlog.services import integrity as integrity_service
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

REPO = Path(__file__).resolve().parent.parent
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
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient
) -> None:
    """Each streaming download holds a pooled connection: past the process's
    download slots (at most all but one of them for one workspace), another
    download waits for one to end, and the API keeps answering meanwhile."""
    for _ in range(3):
        response = await workspace.ingest([event("file.uploaded") for _ in range(700)])
        assert response.status_code == 202, response.text
    export = await create_export(workspace, "NDJSON", {"actions": ["file.uploaded"]})
    row = await export_service.find_export(services, workspace.id, uuid.UUID(export["id"]))
    assert row is not None and row.plan.row_count == 2100
    others = []
    for _ in range(2):
        other = await create_workspace_keys(services, http)
        assert (await other.ingest([event("file.uploaded")])).status_code == 202
        created = await create_export(other, "NDJSON", {"actions": ["file.uploaded"]})
        found = await export_service.find_export(services, other.id, uuid.UUID(created["id"]))
        assert found is not None
        others.append(found)
    slots = download_slots_for(10)  # the test service's pool holds 10 connections
    assert (slots, services.download_slots.per_workspace) == (3, 2)
    # The workspace's share (two), then another workspace's download: every slot.
    streams = [export_service.stream_part(services, row, 1) for _ in range(2)]
    streams.append(export_service.stream_part(services, others[0], 1))
    extra = export_service.stream_part(services, others[1], 1)
    try:
        for stream in streams:
            assert len(await anext(stream)) in (2000, 1)  # suspended mid-part, connection held
        waiting = asyncio.ensure_future(anext(extra))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        body = await workspace.gql("{ workspace { id } }")
        assert body["data"]["workspace"]["id"] == workspace.id
        await streams[0].aclose()  # one download ends: the waiting one goes on
        assert len(await asyncio.wait_for(waiting, 10)) == 1
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


# Proof bundles: downloaded through their links, checked by the real `auditlog verify`.


async def _seal(services: Services, workspace_id: str) -> None:
    async with services.pool.acquire() as conn:
        await integrity_service.seal_until_caught_up(
            conn, workspace_id, services.signing_keys.current()
        )


async def _verify(key: str, bundle: Path, files: list[Path]) -> tuple[int, str]:
    """Run `python -m auditlog.cli verify` as a user would: its exit code and its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditlog.cli",
        "verify",
        "--verifier-key",
        key,
        str(bundle),
        *map(str, files),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def _save(http: httpx.AsyncClient, url: str, path: Path) -> Path:
    return _write(path, (await download(http, url)).content)


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _retouched(path: Path, event_id: str, old: str, new: str) -> Path:
    """The file with `old` changed to `new` on the line of one event (one event a line)."""
    lines = path.read_text().split("\n")
    (n,) = [i for i, line in enumerate(lines) if f'"id":"{event_id}"' in line]
    assert old in lines[n]
    lines[n] = lines[n].replace(old, new, 1)
    out = path.with_name("retouched-" + path.name)
    out.write_text("\n".join(lines))
    return out


def _flip_signature_bit(note: str) -> str:
    body, _, signature = note.rpartition("\n\u2014 ")
    name, _, blob = signature.rstrip("\n").rpartition(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 0x01  # a bit of the Ed25519 signature itself, not of the key hash
    return f"{body}\n\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n"


async def test_a_json_export_verifies_offline_against_its_proof_bundle(
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    target = [{"type": "t", "id": "bundle"}]
    batch = [
        event(targets=target, metadata={"i": i, "x": "é\u2028\U0001f600", "f": 1.5, "big": 10**15})
        for i in range(7)
    ]
    assert (await workspace.ingest(batch)).status_code == 202
    principal = Principal(workspace_id=workspace.id, role="admin", key_id="key_test")
    row = await export_service.create_export(
        services, principal, workspace.id, EventFilter(target_id="bundle"), {}, "JSON", part_size=3
    )
    await _seal(services, workspace.id)
    now = datetime.now(UTC)
    base = str(http.base_url)
    links = export_service.download_links(services, row, base, now)
    assert [x.row_count for x in links] == [3, 3, 1]
    files = [await _save(http, x.url, tmp_path / f"part{x.part}.json") for x in links]
    proof_url = export_service.proof_link(services, row, base, now)
    assert proof_url is not None
    response = await download(http, proof_url)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].endswith('-proof.json"')
    bundle_path = tmp_path / "bundle.json"
    bundle_path.write_bytes(response.content)
    bundle = json.loads(response.content)
    key = services.signing_keys.current().verifier.encode()
    assert bundle["origin"] == f"auditlog.local/{workspace.id}"
    assert bundle["verifierKey"] == key
    exported = [p["id"] for f in files for p in json.loads(f.read_bytes())]
    assert [e["id"] for e in bundle["events"]] == exported  # file order, every part
    assert sorted(exported) == sorted(e["id"] for e in batch)
    checkpoint = open_checkpoint(bundle["checkpoint"], [VerifierKey.parse(key)])
    assert all(0 <= e["leafIndex"] < checkpoint.size for e in bundle["events"])

    code, out = await _verify(key, bundle_path, files)
    assert code == 0, out
    assert (
        f"OK: 7 event(s) of 3 file(s) verified against the checkpoint of {bundle['origin']}" in out
    )

    # Reformatted by a tool (indented, keys reordered): the events are checked by their
    # RFC 8785 form instead of the file's text, and still verify.
    pretty = tmp_path / "pretty.json"
    reordered = [dict(reversed(list(e.items()))) for e in json.loads(files[1].read_bytes())]
    pretty.write_text(json.dumps(reordered, indent=2, ensure_ascii=True))
    code, out = await _verify(key, bundle_path, [files[0], pretty, files[2]])
    assert code == 0, out
    assert "OK: 7 event(s) of 3 file(s)" in out

    # One character of one string value of one event, in the second file.
    victim = json.loads(files[1].read_bytes())[1]["id"]
    retouched = _retouched(files[1], victim, '"name":"Ada Lovelace"', '"name":"Ada Lovelacf"')
    code, out = await _verify(key, bundle_path, [files[0], retouched, files[2]])
    assert code == 1, out
    assert f"event {victim}" in out and "inclusion proof does not verify" in out

    # An event of the files that the bundle lacks.
    missing = exported[-1]
    without = {**bundle, "events": [e for e in bundle["events"] if e["id"] != missing]}
    (tmp_path / "without.json").write_bytes(orjson.dumps(without))
    code, out = await _verify(key, tmp_path / "without.json", files)
    assert code == 1, out
    assert f"event {missing}" in out and "is not in the bundle" in out

    # One bit of the checkpoint's signature.
    forged = {**bundle, "checkpoint": _flip_signature_bit(bundle["checkpoint"])}
    (tmp_path / "forged.json").write_bytes(orjson.dumps(forged))
    code, out = await _verify(key, tmp_path / "forged.json", files)
    assert code == 1, out
    assert "checkpoint does not verify" in out

    # A key of the same name that did not sign it.
    stranger = NoteSigner("auditlog.local", os.urandom(32)).verifier.encode()
    code, out = await _verify(stranger, bundle_path, files)
    assert code == 1, out
    assert "checkpoint does not verify" in out and key in out


async def test_only_json_exports_have_a_proof_url(
    workspace: WorkspaceKeys, known: list[dict[str, Any]]
) -> None:
    assert (await create_export(workspace, "CSV", None))["proofUrl"] is None
    assert (await create_export(workspace, "NDJSON", None))["proofUrl"] is None
    url = (await create_export(workspace, "JSON", None))["proofUrl"]
    export_id = (await workspace.gql(LIST, {"first": 1}))["data"]["exports"][0]["id"]
    assert urlsplit(url).path == f"/v1/exports/{workspace.id}/{export_id}/proof"
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert 3590 <= expires - datetime.now(UTC).timestamp() <= 3600


async def test_altered_or_expired_proof_links_are_refused_like_file_links(
    workspace: WorkspaceKeys,
    known: list[dict[str, Any]],
    services: Services,
    http: httpx.AsyncClient,
) -> None:
    export = await create_export(workspace, "JSON", None)
    await _seal(services, workspace.id)
    url, file_url = export["proofUrl"], export["files"][0]["url"]
    path = urlsplit(url).path
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    signature, expires = query["signature"], query["expires"]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    links = ExportLinks(SECRET_KEY)
    base = url.split("/v1/")[0]
    export_id = uuid.UUID(export["id"])
    now = datetime.now(UTC)
    refused = [
        _altered(url, signature=flipped),
        _altered(url, expires=str(int(expires) + 3600)),
        _altered(url, path=path.replace(export["id"], str(uuid.uuid4()))),
        _altered(url, path=path.replace(workspace.id, workspace.id + "x")),
        url.split("?")[0],
        links.proof_url(base, workspace.id, export_id, now - timedelta(seconds=1)),
        ExportLinks("another-secret-key-0123456789").proof_url(
            base, workspace.id, export_id, now + timedelta(hours=1)
        ),
        # A file link's signature does not open the bundle, nor the bundle's a file.
        _altered(url, **{k: v[0] for k, v in parse_qs(urlsplit(file_url).query).items()}),
        _altered(file_url, signature=signature, expires=expires),
    ]
    answers = [await http.get(link) for link in refused]
    assert [a.status_code for a in answers] == [403] * len(refused)
    file_refusal = await http.get(_altered(file_url, signature=flipped))
    assert {a.content for a in answers} == {file_refusal.content}
    assert (await http.head(refused[0])).status_code == 403
    head = await http.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-disposition"].endswith('-proof.json"')
    assert (await http.get(url)).status_code == 200
    # A CSV export has no bundle, even through a link signed for one.
    csv_export = await create_export(workspace, "CSV", None)
    csv_link = links.proof_url(
        base, workspace.id, uuid.UUID(csv_export["id"]), now + timedelta(hours=1)
    )
    assert (await http.get(csv_link)).status_code == 404


async def test_a_proof_link_opens_only_its_own_workspace(
    workspace: WorkspaceKeys,
    known: list[dict[str, Any]],
    services: Services,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    mine = await create_export(workspace, "JSON", None)
    other = await create_workspace_keys(services, http)
    assert (await other.ingest([event()])).status_code == 202
    theirs = await create_export(other, "JSON", None)
    await _seal(services, workspace.id)
    await _seal(services, other.id)
    # The other workspace's valid link, pointed at my export, or mine moved to theirs.
    their_path = urlsplit(theirs["proofUrl"]).path
    refused = [
        _altered(theirs["proofUrl"], path=their_path.replace(theirs["id"], mine["id"])),
        _altered(mine["proofUrl"], path=their_path.replace(theirs["id"], mine["id"])),
        _altered(mine["proofUrl"], path=their_path),
    ]
    assert [(await http.get(link)).status_code for link in refused] == [403] * 3
    bundle = json.loads((await download(http, theirs["proofUrl"])).content)
    assert bundle["origin"] == f"auditlog.local/{other.id}"
    theirs_file = json.loads((await download(http, theirs["files"][0]["url"])).content)
    assert [e["id"] for e in bundle["events"]] == [e["id"] for e in theirs_file]
    # Their bundle proves nothing of my files, even with my events' proofs put in it.
    key = services.signing_keys.current().verifier.encode()
    mine_file = _write(
        tmp_path / "mine.json", (await download(http, mine["files"][0]["url"])).content
    )
    mine_bundle = json.loads((await download(http, mine["proofUrl"])).content)
    mixed = {**bundle, "events": bundle["events"] + mine_bundle["events"]}
    mixed_path = _write(tmp_path / "mixed.json", orjson.dumps(mixed))
    report = verify_bundle(key, str(mixed_path), [str(mine_file)])
    assert not report.ok
    first = json.loads(mine_file.read_bytes())[0]["id"]
    assert (
        f"event {first}" in report.summary() and f"workspace {workspace.id!r}" in report.summary()
    )


async def test_a_bundle_is_pending_until_its_events_are_sealed(
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """No sealer runs in the test service: events stay unsealed until the test seals."""
    target = [{"type": "t", "id": "pending"}]
    assert (await workspace.ingest([event(targets=target) for _ in range(3)])).status_code == 202
    export = await create_export(workspace, "JSON", {"targetId": "pending"})
    started = time.monotonic()
    response = await http.get(export["proofUrl"])
    waited = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert 10 <= waited < 14
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["status"] == "PENDING"
    assert (body["events"], body["unsealedEvents"]) == (3, 3)

    await _seal(services, workspace.id)
    key = services.signing_keys.current().verifier.encode()
    part = await _save(http, export["files"][0]["url"], tmp_path / "part1.json")
    bundle = await _save(http, export["proofUrl"], tmp_path / "bundle.json")
    assert verify_bundle(key, str(bundle), [str(part)]).ok

    # A download that starts before the seal waits for it, then streams the bundle.
    assert (await workspace.ingest([event(targets=target)])).status_code == 202
    later = await create_export(workspace, "JSON", {"targetId": "pending"})
    started = time.monotonic()
    waiting = asyncio.ensure_future(http.get(later["proofUrl"]))
    await asyncio.sleep(1)
    assert not waiting.done()
    await _seal(services, workspace.id)
    response = await waiting
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 5
    assert len(json.loads(response.content)["events"]) == 4


async def test_a_bundle_of_2000_events_verifies(
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    for _ in range(4):
        batch = [event("file.uploaded", metadata={"n": i}) for i in range(500)]
        assert (await workspace.ingest(batch)).status_code == 202
    export = await create_export(workspace, "JSON", {"actions": ["file.uploaded"]})
    assert export["rowCount"] == 2000
    await _seal(services, workspace.id)
    part = await _save(http, export["files"][0]["url"], tmp_path / "part1.json")
    bundle = await _save(http, export["proofUrl"], tmp_path / "bundle.json")
    print(f"bundle of 2,000 events: {bundle.stat().st_size} bytes")
    code, out = await _verify(services.signing_keys.current().verifier.encode(), bundle, [part])
    assert code == 0, out
    assert "OK: 2000 event(s) of 1 file(s)" in out
