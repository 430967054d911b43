"""Exports over many rows: parts of 10,000, a result fixed at creation, the partner script."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from auditlog.runtime import Services
from tests.conftest import RunningService, WorkspaceKeys, create_workspace_keys, event
from tests.exports_support import create_export, csv_rows, download

BULK = 25_000
DOCS = Path(__file__).resolve().parent.parent / "docs" / "exports.md"


@dataclass
class BulkData:
    ws: WorkspaceKeys
    ids: set[str]
    oldest: datetime
    newest: datetime


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
async def bulk(services: Services, service: RunningService) -> AsyncIterator[BulkData]:
    """25,000 events of actor 'bulk', ingested over HTTP in batches of 1,000."""
    async with httpx.AsyncClient(base_url=service.base_url, timeout=120) as client:
        ws = await create_workspace_keys(services, client)
        newest = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        ids: set[str] = set()
        for start in range(0, BULK, 1000):
            batch = [
                event(
                    "file.uploaded",
                    occurredAt=_iso(newest - timedelta(seconds=i)),
                    actor={"type": "USER", "id": "bulk", "email": "bulk@acme.io"},
                )
                for i in range(start, start + 1000)
            ]
            response = await ws.ingest(batch)
            assert response.status_code == 202, response.text
            ids.update(e["id"] for e in batch)
        others = [event("file.deleted", actor={"type": "USER", "id": "other"}) for _ in range(50)]
        assert (await ws.ingest(others)).status_code == 202
        yield BulkData(ws, ids, newest - timedelta(seconds=BULK - 1), newest)


async def test_25000_events_give_3_files_and_later_events_are_absent(
    bulk: BulkData, http: httpx.AsyncClient
) -> None:
    ws = bulk.ws
    created = {fmt: await create_export(ws, fmt, {"actorId": "bulk"}) for fmt in ("CSV", "JSON")}
    late = [
        event(
            "file.uploaded",
            occurredAt=_iso(bulk.newest + timedelta(minutes=10)),
            actor={"type": "USER", "id": "bulk"},
        )
        for _ in range(20)
    ]
    assert (await ws.ingest(late)).status_code == 202  # committed after the exports

    for fmt, export in created.items():
        assert export["rowCount"] == BULK
        assert [(f["part"], f["rowCount"]) for f in export["files"]] == [
            (1, 10_000),
            (2, 10_000),
            (3, 5_000),
        ]
        seen: list[tuple[str, str]] = []  # (occurredAt, id) across parts, in file order
        for file in export["files"]:
            content = (await download(http, file["url"])).content
            if fmt == "CSV":
                header, *rows = csv_rows(content)
                part = [(r[header.index("occurredAt")], r[header.index("id")]) for r in rows]
            else:
                part = [(p["occurredAt"], p["id"]) for p in json.loads(content)]
            assert len(part) == file["rowCount"]
            seen += part
        assert len(seen) == BULK
        assert {i for _, i in seen} == bulk.ids  # every event once, none of the late ones
        stamps = [at for at, _ in seen]
        assert stamps == sorted(stamps, reverse=True)  # newest first across parts


async def test_transaction_in_flight_at_creation_stays_out(
    workspace: WorkspaceKeys, http: httpx.AsyncClient, database_url: str
) -> None:
    response = await workspace.ingest([event(targets=[{"type": "t", "id": "snap"}])])
    assert response.status_code == 202
    owner = await asyncpg.connect(database_url)
    try:
        writer = owner.transaction()
        await writer.start()
        # A writer that took its sequence number and has not committed yet.
        await owner.execute(
            """INSERT INTO audit_events (workspace_id, occurred_at, id, received_at, action,
                   category, actor_type, actor_id, actor_email, ip, target_ids, payload)
               SELECT workspace_id, occurred_at, gen_random_uuid(), received_at, action,
                   category, actor_type, actor_id, actor_email, ip, target_ids, payload
               FROM audit_events WHERE workspace_id = $1 AND target_ids @> '{snap}'""",
            workspace.id,
        )
        export = await create_export(workspace, "NDJSON", {"targetId": "snap"})
        await writer.commit()
    finally:
        await owner.close()
    count = await workspace.gql('{ auditEvents(filter: {targetId: "snap"}) { edges { cursor } } }')
    assert len(count["data"]["auditEvents"]["edges"]) == 2  # both are in the log now
    assert export["rowCount"] == 1
    content = (await download(http, export["files"][0]["url"])).content
    assert len(content.decode().splitlines()) == 1


def _partner_script() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "docs/exports.md holds exactly one python script"
    return str(blocks[0])


async def test_partner_script_from_the_docs_downloads_every_part(
    bulk: BulkData, service: RunningService, tmp_path: Path
) -> None:
    script = tmp_path / "export_range.py"
    script.write_text(_partner_script())
    out = tmp_path / "files"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        _iso(bulk.oldest),
        _iso(bulk.newest + timedelta(seconds=1)),
        str(out),
        env={"AUDITLOG_URL": service.base_url, "AUDITLOG_API_KEY": bulk.ws.admin},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["part-001.csv", "part-002.csv", "part-003.csv"]
    ids = [row[0] for f in files for row in csv_rows(f.read_bytes())[1:]]
    assert len(ids) == BULK and set(ids) == bulk.ids
    assert f"{BULK} events in 3 files" in stdout.decode()


async def test_abandoned_downloads_give_their_connection_back(
    bulk: BulkData, services: Services, http: httpx.AsyncClient
) -> None:
    export = await create_export(bulk.ws, "CSV", {"actorId": "bulk"})
    url = export["files"][0]["url"]
    for _ in range(services.pool.get_max_size() + 2):
        async with httpx.AsyncClient(timeout=30) as client, client.stream("GET", url) as response:
            assert response.status_code == 200
            async for _chunk in response.aiter_raw():
                break  # the client goes away in the middle of the file
    # Were connections leaked, the pool would be exhausted and this would hang.
    rows = csv_rows((await asyncio.wait_for(download(http, url), timeout=30)).content)
    assert len(rows) == 1 + 10_000
