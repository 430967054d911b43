"""The real `auditlog serve --workers 2`: metrics summed over its processes, and its
JSON logs, which hold a request id on every request's lines and no secret at all.

The server runs with every secret it can be given (secret key, console JWT secret,
signing key, a database password, a metrics token), and the run uses every
secret a request can carry (API keys, a console session token, a webhook
secret, S3 credentials, a download link's signature); none may appear in what
the server printed.
"""

from __future__ import annotations

import asyncio
import base64
import glob
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import jwt
import orjson
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from auditlog.runtime import open_services
from tests.conftest import (
    SpareDatabases,
    WorkspaceKeys,
    create_workspace_keys,
    event,
    free_port,
    make_settings,
)
from tests.exports_support import create_export
from tests.streaming.gql import LIST, create_destination
from tests.streaming.receivers import Receiver, wait_until
from tests.test_metrics import Samples, parse, value

pytestmark = pytest.mark.slow


def _with_password(url: str, password: str) -> str:
    # Trust authentication ignores it; the server is handed it all the same.
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass
class Served:
    base_url: str
    env: dict[str, str]
    process: asyncio.subprocess.Process
    output: Path
    multiproc_dir: Path
    ws: WorkspaceKeys
    http: httpx.AsyncClient
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str:
        return self.env["AUDITLOG_METRICS_TOKEN"]

    async def scrape(self) -> Samples:
        # A new connection each time: any of the workers may answer.
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            response = await http.get("/metrics", headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 200, response.text
        return parse(response.text)

    async def stop(self) -> str:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.output.read_text()


@pytest.fixture(scope="module")
async def served(
    spare_databases: SpareDatabases, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    url = await spare_databases.new()
    tmp = Path(tmp_path_factory.mktemp("served"))
    password = "pw-" + secrets.token_hex(12)
    env = {
        **os.environ,
        "DATABASE_URL": _with_password(url, password),
        "AUDITLOG_DATA_DIR": str(tmp),
        "AUDITLOG_LOG_FORMAT": "json",
        "AUDITLOG_SECRET_KEY": "sk-" + secrets.token_hex(20),
        "AUDITLOG_JWT_SECRET": "jwt-" + secrets.token_hex(24),
        "AUDITLOG_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "AUDITLOG_METRICS_TOKEN": "mt-" + secrets.token_hex(16),
        "AUDITLOG_ALLOW_PRIVATE_DESTINATIONS": "1",
        "AUDITLOG_INGEST_EVENTS_PER_SECOND": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus"),
    }
    for name in ("REDIS_URL", "AUDITLOG_GEOIP_DB", "AUDITLOG_PUBLIC_URL"):
        env.pop(name, None)
    port = free_port()
    output = tmp / "output.log"
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "auditlog.cli", "serve", "--workers", "2", "--port", str(port)),
            env=env,
            cwd=tmp,
            stdout=sink,
            stderr=sink,
        )
    base_url = f"http://127.0.0.1:{port}"
    settings = make_settings(url, tmp, secret_key=env["AUDITLOG_SECRET_KEY"])
    async with (
        open_services(settings, pool_size=2) as services,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.returncode is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            await asyncio.sleep(0.2)
        ws = await create_workspace_keys(services, http)
        running = Served(base_url, env, process, output, tmp / "prometheus", ws, http)
        running.secrets = {
            name: env[name]
            for name in (
                "AUDITLOG_SECRET_KEY",
                "AUDITLOG_JWT_SECRET",
                "AUDITLOG_SIGNING_KEY",
                "AUDITLOG_METRICS_TOKEN",
            )
        }
        running.secrets |= {
            "database password": password,
            "admin key": ws.admin,
            "owner key": ws.owner,
            "member key": ws.member,
            "ingest key": ws.ingest_key,
        }
        try:
            yield running
        finally:
            await running.stop()


def accepted_by_process(folder: Path) -> dict[int, float]:
    """Each worker's own count of accepted events, from its file."""
    counts: dict[int, float] = {}
    for path in glob.glob(str(folder / "counter_*.db")):
        pid = int(Path(path).stem.split("_")[1])
        for metric in MultiProcessCollector.merge([path], accumulate=True):  # type: ignore[no-untyped-call]
            for s in metric.samples:
                if s.name == "auditlog_ingest_events_total" and s.labels == {"outcome": "accepted"}:
                    counts[pid] = counts.get(pid, 0) + s.value
    return counts


async def test_two_workers_sum_their_ingest_counters(served: Served) -> None:
    before = value(await served.scrape(), "auditlog_ingest_events_total", outcome="accepted")
    sent = 0

    async def batch() -> int:
        # A connection of its own, so the two processes share the batches.
        async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as http:
            response = await http.post(
                "/v1/events",
                json=[event() for _ in range(5)],
                headers=served.ws.auth(served.ws.ingest_key),
            )
        assert response.status_code == 202, response.text
        accepted: int = response.json()["accepted"]
        return accepted

    for _ in range(20):
        sent += sum(await asyncio.gather(*(batch() for _ in range(6))))
        if sum(1 for n in accepted_by_process(served.multiproc_dir).values() if n) >= 2:
            break
    per_process = accepted_by_process(served.multiproc_dir)
    assert sum(1 for n in per_process.values() if n) >= 2, per_process
    for _ in range(4):  # whichever process answers, the sum is the same
        samples = await served.scrape()
        assert value(samples, "auditlog_ingest_events_total", outcome="accepted") - before == sent
        assert value(samples, "auditlog_ingest_events_total", outcome="accepted") == sum(
            per_process.values()
        )
        assert value(samples, "auditlog_db_pool_connections_max") == 20  # 10 a process


async def test_json_logs_hold_request_ids_and_no_secret(served: Served) -> None:
    ws, http = served.ws, served.http
    found = dict(served.secrets)
    receiver = Receiver(status=400)  # refuses, echoing the request's headers back
    await receiver.start()
    try:
        request_id = "secrets-run-" + secrets.token_hex(4)
        response = await http.post(
            "/v1/events",
            json=[event() for _ in range(3)],
            headers={**ws.auth(ws.ingest_key), "X-Request-Id": request_id},
        )
        assert response.status_code == 202 and response.headers["x-request-id"] == request_id
        webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        s3_key_id = "AKIA" + secrets.token_hex(8).upper()
        s3_secret = secrets.token_urlsafe(30)
        found |= {"webhook secret": webhook_secret, "S3 secret": s3_secret, "S3 key": s3_key_id}
        await create_destination(
            ws, {"webhook": {"url": receiver.url + "/hook", "secret": webhook_secret}}, "hook"
        )
        await create_destination(
            ws,
            {
                "s3": {
                    "bucket": "audit",
                    "region": "eu-west-1",
                    "accessKeyId": s3_key_id,
                    "secretAccessKey": s3_secret,
                    "endpointUrl": receiver.url,
                }
            },
            "bucket",
        )
        session = jwt.encode(
            {"sub": "u_1", "workspace": ws.id, "role": "admin", "exp": int(time.time()) + 600},
            served.env["AUDITLOG_JWT_SECRET"],
            algorithm="HS256",
        )
        found["console session token"] = session
        body = await ws.gql("{ workspace { id } }", key=session)
        assert body["data"]["workspace"]["id"] == ws.id, body
        wrong = "al_" + secrets.token_urlsafe(24)
        found["a wrong API key"] = wrong
        assert (
            await http.post("/graphql", json={"query": "{ x }"}, headers=ws.auth(wrong))
        ).status_code == 401
        export = await create_export(ws, "JSON", None)
        link = export["files"][0]["url"]
        signature = parse_qs(urlsplit(link).query)["signature"][0]
        found["download signature"] = signature
        assert (await http.get(link)).status_code == 200
        assert (
            await http.get("/metrics", headers={"Authorization": f"Bearer {served.token}"})
        ).status_code == 200

        async def failed() -> bool:
            listed = (await ws.gql(LIST))["data"]["streamingDestinations"]
            return all(d["lastError"] for d in listed)

        await wait_until(failed, within=30, step=0.3)
    finally:
        await receiver.stop()
    text = await served.stop()
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    assert len(lines) == len(text.splitlines())  # every line is one JSON object
    for line in lines:
        assert {"ts", "level", "logger", "message", "request_id"} <= line.keys(), line
    for name, secret in found.items():
        assert secret not in text, f"the {name} was logged"
    mine = [line for line in lines if line["request_id"] == request_id]
    assert any(line["logger"] == "uvicorn.access" and line["status"] == 202 for line in mine)
    downloads = [line for line in lines if "/v1/exports/" in line["message"]]
    assert downloads and all("signature=[redacted]" in line["path"] for line in downloads)
    assert any(
        "failed" in line["message"] and line["logger"].endswith("delivery") for line in lines
    )
