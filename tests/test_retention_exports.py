"""An export's files never show an event older than the workspace's retention as
it is when they are downloaded, even if the export was made before a downgrade."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx

from auditlog.runtime import Services
from auditlog.services import workspaces as workspace_service
from tests.conftest import create_workspace_keys, event
from tests.exports_support import create_export, download


async def test_download_after_a_downgrade_shows_only_the_new_window(
    services: Services, http: httpx.AsyncClient
) -> None:
    ws = await create_workspace_keys(services, http, "professional")
    old_at = (datetime.now(UTC) - timedelta(days=200)).isoformat()
    old, recent = event("file.uploaded", occurredAt=old_at), event("file.uploaded")
    assert (await ws.ingest([old, recent])).status_code == 202
    export = await create_export(ws, "JSON", {"actions": ["file.uploaded"]})
    (part,) = export["files"]
    before = json.loads((await download(http, part["url"])).content)
    assert {e["id"] for e in before} == {old["id"], recent["id"]}

    await workspace_service.set_plan(services.pool, ws.id, "early_access")

    after = json.loads((await download(http, part["url"])).content)
    assert [e["id"] for e in after] == [recent["id"]]
