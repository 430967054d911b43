"""Attacks a security review tried, replayed: one small test per attack, named after it.

Each section says the attack in a line and holds its tests. To add one: a new
section with a `test_<attack>` function (or several); the helpers at the top
start a service with other settings and make a workspace with keys of every role.

Attacks whose tests live beside the feature they break (each listed in
ELSEWHERE below, and checked to exist by `test_every_attack_elsewhere_is_tested`):

- an ingest key forges the service's own audit_log.* record;
- a revoked key or an expired console JWT keeps its open websockets and can still
  send mutations on them;
- a mistyped or malicious retention cut purges history at once; a legal hold;
- 30 concurrent createExport calls run 30 full scans;
- one workspace's stalled downloads stall every workspace's downloads;
- a streaming destination's name rebinds to a private address after the check, or
  an environment proxy carries S3 traffic; site-local and embedded-private IPv6.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import PIPE, STDOUT
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from auditlog.runtime import Services
from auditlog.storage.database import create_pool, owner_connection
from tests.conftest import (
    JWT_SECRET,
    SECRET_KEY,
    RunningService,
    WorkspaceKeys,
    create_workspace_keys,
    event,
    free_port,
    make_settings,
    start_service,
    stop_service,
)
from tests.exports_support import create_export, download
from tests.live_client import live_client, ws_url
from tests.streaming.gql import DELETE, PAUSE, create_destination

LAG_CAP = 10_000  # lagEvents' documented "at least" bound
ACTIVITY_CAP = 10_000  # events actorActivity reads at most


@asynccontextmanager
async def service_with(
    database_url: str, data_dir: Path, **overrides: Any
) -> AsyncIterator[tuple[RunningService, WorkspaceKeys]]:
    """A service of its own, with some settings changed, and a fresh workspace on it."""
    running = await start_service(make_settings(database_url, data_dir, **overrides))
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as client:
            yield running, await create_workspace_keys(running.services, client)
    finally:
        await stop_service(running)


# A statement that runs for ever (here: one waiting on a lock) holds a pooled
# connection and the request with it --------------------------------------------


async def test_a_statement_past_the_timeout_is_refused_clearly_not_hung(
    database_url: str, data_dir: Path
) -> None:
    async with service_with(database_url, data_dir, statement_timeout_seconds=0.5) as (_, ws):
        locker = await asyncpg.connect(database_url)
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
                started = time.monotonic()
                answer = ws.gql("{ auditEvents(first: 1) { edges { cursor } } }")
                body = await asyncio.wait_for(answer, timeout=10)
                waited = time.monotonic() - started
        finally:
            await locker.close()
    assert waited < 5, f"answered after {waited:.1f} s, when the lock was released"
    error = body["errors"][0]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX", body
    assert "statement timeout" in error["message"] and "0.5 s" in error["message"], body


async def test_ingest_past_the_statement_timeout_answers_503_with_retry_after(
    database_url: str, data_dir: Path
) -> None:
    async with service_with(database_url, data_dir, statement_timeout_seconds=0.5) as (_, ws):
        locker = await asyncpg.connect(database_url)
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE audit_event_ids IN ACCESS EXCLUSIVE MODE")
                response = await asyncio.wait_for(ws.ingest([event()]), timeout=10)
        finally:
            await locker.close()
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"].isdigit()
        assert (await ws.ingest([event()])).status_code == 202  # and it recovers


async def test_owner_connections_have_no_statement_timeout(services: Services) -> None:
    async with owner_connection(services.database_url) as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "0"
    async with services.pool.acquire() as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "30s"
    pool = await create_pool(services.database_url, min_size=1, max_size=1, statement_timeout=2.5)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "2500ms"
    finally:
        await pool.close()


# lagEvents counted every pending event (up to a million) of every destination,
# again for every alias of streamingDestinations ---------------------------------


async def ingest_many(ws: WorkspaceKeys, count: int, **fields: Any) -> None:
    for start in range(0, count, 1000):
        batch = [event("file.share.created", **fields) for _ in range(min(1000, count - start))]
        response = await ws.ingest(batch)
        assert response.status_code == 202, response.text


async def test_lag_events_is_bounded_and_counted_once_per_request(
    workspace: WorkspaceKeys,
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": "http://127.0.0.1:9/x"}})
    destination_id = created["destination"]["id"]
    try:
        await workspace.gql(PAUSE, {"id": destination_id})
        await ingest_many(workspace, LAG_CAP + 50)
        aliased = " ".join(f"a{i}: streamingDestinations {{ id lagEvents }}" for i in range(20))
        body = await workspace.gql(f"{{ {aliased} }}")
        assert "errors" not in body, body
        lags = {d["lagEvents"] for listing in body["data"].values() for d in listing}
        assert lags == {LAG_CAP}, lags  # "at least 10,000"
    finally:
        await workspace.gql(DELETE, {"id": destination_id})


# actorActivity read every event of the actor in the range (all of retention by
# default), however many: an actor of millions of events made one query read them all


async def test_actor_activity_reads_at_most_the_newest_ten_thousand_events(
    workspace: WorkspaceKeys,
) -> None:
    actor = {"type": "USER", "id": "u_busy", "name": "Busy", "email": "busy@acme.io"}
    old = datetime.now(UTC) - timedelta(days=3)
    oldest = event(actor=actor, ipAddress="89.160.20.112", occurredAt=old.isoformat())
    assert (await workspace.ingest([oldest])).status_code == 202
    await ingest_many(workspace, ACTIVITY_CAP, actor=actor, ipAddress="81.2.69.142")
    query = (
        '{ actorActivity(actorEmail: "busy@acme.io") { truncated ipAddresses { value count } } }'
    )
    body = await workspace.gql(query)
    assert "errors" not in body, body
    activity = body["data"]["actorActivity"]
    assert activity["truncated"] is True
    assert activity["ipAddresses"] == [{"value": "81.2.69.142", "count": ACTIVITY_CAP}]
    narrowed = await workspace.gql(
        """query($to: DateTime) { actorActivity(actorEmail: "busy@acme.io", occurredTo: $to) {
             truncated ipAddresses { value count } } }""",
        {"to": (old + timedelta(seconds=1)).isoformat()},
    )
    assert narrowed["data"]["actorActivity"] == {
        "truncated": False,
        "ipAddresses": [{"value": "89.160.20.112", "count": 1}],
    }


# Ingest had no rate: one key could send batch after batch as fast as the server
# took them, at the cost of every other sender ---------------------------------


async def test_ingest_over_a_keys_rate_answers_429_with_retry_after(
    database_url: str, data_dir: Path
) -> None:
    limits = {"ingest_events_per_second": 100, "ingest_burst_events": 1000}
    async with service_with(database_url, data_dir, **limits) as (running, ws):
        assert (await ws.ingest([event() for _ in range(1000)])).status_code == 202
        refused = await ws.ingest([event() for _ in range(500)])
        assert refused.status_code == 429, refused.status_code
        assert 1 <= int(refused.headers["Retry-After"]) <= 6, refused.headers
        assert refused.json()["error"] == "rate_limited"
        other = await create_workspace_keys(running.services, ws.http)
        assert (await other.ingest([event()])).status_code == 202  # per key
        await asyncio.sleep(int(refused.headers["Retry-After"]))
        assert (await ws.ingest([event() for _ in range(500)])).status_code == 202


# Documents built to exhaust graphql-core's own limits got its bare "Validation
# aborted." or a syntax error instead of QUERY_TOO_COMPLEX naming the limit -----

OVERSIZED_DOCUMENTS = {
    "over 100 validation errors": ("{ " + " ".join(f"f{i}" for i in range(150)) + " }", "100"),
    "a field repeated past the comparison budget": (
        "{ " + " ".join("workspace { id }" for _ in range(1200)) + " }",
        "500000",
    ),
    "nested deeper than the parser allows": (
        "{" + "workspace {" * 250 + "id" + "}" * 250 + "}",
        "200",
    ),
    "more tokens than the parser reads": ("{ " + "__typename " * 6000 + "}", "5000"),
}


@pytest.mark.parametrize("attack", OVERSIZED_DOCUMENTS)
async def test_a_document_over_graphql_cores_limits_is_query_too_complex(
    workspace: WorkspaceKeys, attack: str
) -> None:
    document, limit = OVERSIZED_DOCUMENTS[attack]
    body = await workspace.gql(document)
    errors = body["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["QUERY_TOO_COMPLEX"], errors[-2:]
    assert limit in errors[0]["message"] and "aborted" not in errors[0]["message"], errors


@pytest.mark.parametrize("attack", OVERSIZED_DOCUMENTS)
async def test_the_same_documents_over_a_websocket_are_query_too_complex(
    service: RunningService, workspace: WorkspaceKeys, attack: str
) -> None:
    document, limit = OVERSIZED_DOCUMENTS[attack]
    async with live_client(service.base_url, workspace.admin) as client:
        op = await client.subscribe(query=document)
        message = await client.next_message(op)
    assert message["type"] == "error", message
    codes = [e.get("extensions", {}).get("code") for e in message["payload"]]
    assert codes == ["QUERY_TOO_COMPLEX"], message["payload"][-2:]
    assert limit in message["payload"][0]["message"]
    assert "aborted" not in message["payload"][0]["message"]


# A console token minted by the identity provider for another application (its
# issuer or audience not ours) signed in, as long as the signing key matched ---


def console_token(workspace_id: str, role: str = "admin", **claims: Any) -> str:
    body = {"sub": "u_9", "workspace": workspace_id, "role": role, "exp": int(time.time()) + 600}
    return jwt.encode({**body, **claims}, JWT_SECRET, algorithm="HS256")


async def test_console_tokens_of_another_issuer_or_audience_are_refused(
    database_url: str, data_dir: Path
) -> None:
    ours = {"jwt_issuer": "https://id.acme.io", "jwt_audience": "auditlog"}
    async with service_with(database_url, data_dir, **ours) as (_, ws):
        query = {"query": "{ workspace { id } }"}

        async def status(token: str) -> int:
            response = await ws.http.post("/graphql", json=query, headers=ws.auth(token))
            return response.status_code

        iss, aud = ours["jwt_issuer"], ours["jwt_audience"]
        assert await status(console_token(ws.id, iss=iss, aud=aud)) == 200
        assert await status(console_token(ws.id, iss=iss, aud=[aud, "other"])) == 200
        assert await status(console_token(ws.id)) == 401
        assert await status(console_token(ws.id, iss=iss)) == 401
        assert await status(console_token(ws.id, aud=aud)) == 401
        assert await status(console_token(ws.id, iss="https://evil.example", aud=aud)) == 401
        assert await status(console_token(ws.id, iss=iss, aud="another-app")) == 401


# A signed download link travels in the query string, and uvicorn's access log
# printed it whole: anyone reading the logs could download the export ---------


async def test_download_signatures_stay_out_of_the_access_log(
    services: Services, database_url: str, data_dir: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AUDITLOG_DATA_DIR": str(data_dir),
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
    }
    env.pop("REDIS_URL", None)
    command = [sys.executable, "-m", "auditlog.cli", "serve", "--port", str(port)]
    server = await asyncio.create_subprocess_exec(
        *command, "--no-background", env=env, stdout=PIPE, stderr=STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            ws = await create_workspace_keys(services, client)
            assert (await ws.ingest([event()])).status_code == 202
            export = await create_export(ws, "CSV", None)
            url = export["files"][0]["url"]
            signature = parse_qs(urlsplit(url).query)["signature"][0]
            await download(client, url)
    finally:
        server.terminate()
        logged, _ = await server.communicate()
    log = logged.decode()
    assert f"GET {urlsplit(url).path}" in log, log  # the download was logged...
    assert signature not in log, log  # ...without its signature


# The workspace query answered member and ingest keys (plan and retention), though
# the contract gives a member nothing and an ingest key only ingest -------------


async def test_member_and_ingest_keys_cannot_read_the_workspace(workspace: WorkspaceKeys) -> None:
    for key in (workspace.member, workspace.ingest_key):
        body = await workspace.gql("{ workspace { id plan retentionDays } }", key=key)
        assert body["data"] is None, body
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
    for key in (workspace.owner, workspace.admin):
        body = await workspace.gql("{ workspace { id } }", key=key)
        assert body["data"]["workspace"] == {"id": workspace.id}


# One socket opens subscriptions without end, or one key opens sockets without end:
# each holds memory and a share of the live tail -------------------------------


async def test_one_socket_runs_at_most_the_set_number_of_operations(
    database_url: str, data_dir: Path
) -> None:
    async with (
        service_with(database_url, data_dir, ws_max_operations=3) as (running, ws),
        live_client(running.base_url, ws.admin) as client,
    ):
        for _ in range(3):
            await client.subscribe()
        refused = await client.subscribe()
        message = await client.next_message(refused)
        assert message["type"] == "error", message
        (error,) = message["payload"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert "at most 3 operations" in error["message"]
        assert client.is_open


async def test_one_key_holds_at_most_the_set_number_of_sockets(
    database_url: str, data_dir: Path
) -> None:
    async with service_with(database_url, data_dir, ws_max_sockets_per_key=2) as (running, ws):
        async with (
            live_client(running.base_url, ws.admin),
            live_client(running.base_url, ws.admin),
        ):
            async with websockets.connect(
                ws_url(running.base_url),
                subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            ) as third:
                payload = {"authorization": f"Bearer {ws.admin}"}
                await third.send(json.dumps({"type": "connection_init", "payload": payload}))
                with pytest.raises(ConnectionClosed) as closed:
                    while True:  # the ack may come before the close
                        await asyncio.wait_for(third.recv(), 10)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 4429
                assert "at most 2" in closed.value.rcvd.reason
            # Another key of the same workspace is counted on its own.
            async with live_client(running.base_url, ws.owner) as other:
                assert other.is_open
        # Closed sockets give their places back.
        async with live_client(running.base_url, ws.admin) as again:
            assert again.is_open


ELSEWHERE = {
    "tests/test_ingest.py": ["test_service_actions_are_refused_from_every_key"],
    "tests/test_live_revocation.py": [
        "test_cli_revocation_closes_a_live_and_an_idle_socket_with_4401",
        "test_a_mutation_sent_after_revocation_is_refused_and_the_socket_closed",
        "test_every_operation_is_authorized_again",
        "test_a_console_session_socket_closes_at_its_exp",
    ],
    "tests/test_retention_grace.py": [
        "test_a_cut_by_set_plan_waits_for_the_grace_period",
        "test_a_runtime_update_of_retention_does_not_shorten_the_bound",
        "test_a_legal_hold_stops_every_purge_until_released",
    ],
    "tests/test_exports_rate.py": ["test_at_most_the_limit_of_scans_run_under_a_burst"],
    "tests/test_exports_fairness.py": [
        "test_stalled_downloads_of_one_workspace_leave_slots_to_another",
        "test_a_stalled_download_is_dropped_after_the_idle_time",
    ],
    "tests/streaming/test_netguard.py": [
        "test_which_addresses_are_public",
        "test_s3_endpoint_rebound_to_a_private_address_after_the_check_is_refused",
        "test_s3_ignores_proxies_from_the_environment",
    ],
}


def test_every_attack_elsewhere_is_tested() -> None:
    root = Path(__file__).resolve().parents[1]
    for path, names in ELSEWHERE.items():
        text = (root / path).read_text()
        for name in names:
            assert f"def {name}(" in text, f"{path} no longer has {name}"
