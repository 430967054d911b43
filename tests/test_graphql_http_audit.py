"""GraphQL over HTTP conformance: graphql-http's server audits against the running
service (node script in tests/graphql_http; `.ci/run` installs it with npm ci)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningService, WorkspaceKeys

AUDIT_DIR = Path(__file__).parent / "graphql_http"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
@pytest.mark.skipif(
    not (AUDIT_DIR / "node_modules" / "graphql-http").is_dir(),
    reason="run `npm ci` in tests/graphql_http (.ci/run does)",
)
async def test_graphql_http_server_audits_end_in_no_error(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(AUDIT_DIR / "audit.mjs"),
        env={
            **os.environ,
            "AUDIT_URL": f"{service.base_url}/graphql",
            "AUDIT_TOKEN": workspace.admin,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert out, err.decode()
    summary = json.loads(out)
    assert summary["error"] == [], json.dumps(summary["error"], indent=2)
    assert process.returncode == 0, err.decode()
    assert len(summary["ok"]) >= 40  # the audits really ran
    assert summary["warn"] == [], json.dumps(summary["warn"], indent=2)


async def test_graphiql_opens_in_a_browser_without_a_token(service: RunningService) -> None:
    async with httpx.AsyncClient(base_url=service.base_url) as http:
        page = await http.get("/graphql", headers={"Accept": "text/html,application/xhtml+xml"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "graphiql" in page.text.lower()
        # Without the browser's Accept header a GET is a GraphQL request: a token is needed.
        query = await http.get("/graphql", params={"query": "{ workspace { id } }"})
        assert query.status_code == 401


async def test_graphql_response_media_type_and_request_errors(
    workspace: WorkspaceKeys,
) -> None:
    accept = {"Accept": "application/graphql-response+json", **workspace.auth(workspace.admin)}
    ok = await workspace.http.post(
        "/graphql", json={"query": "{ workspace { id } }"}, headers=accept
    )
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("application/graphql-response+json")
    bad = await workspace.http.post("/graphql", json={"query": "{ workspace "}, headers=accept)
    assert bad.status_code == 400 and "data" not in bad.json()
    assert bad.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    legacy = await workspace.http.post(
        "/graphql", json={"query": "{ workspace "}, headers=workspace.auth(workspace.admin)
    )
    assert legacy.status_code == 200 and legacy.headers["content-type"] == "application/json"
