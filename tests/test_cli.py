"""The `auditlog` command, run as a user would: a subprocess against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from auditlog.catalog import CATEGORY_OF
from auditlog.demo import demo_events
from auditlog.ingest.validate import validate_event
from tests.conftest import SECRET_KEY


def run_cli(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AUDITLOG_DATA_DIR": str(data_dir),
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
    }
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "auditlog.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(database_url: str, data_dir: Path) -> Cli:
    return lambda *args: run_cli(database_url, data_dir, *args)


async def test_workspace_and_key_lifecycle(cli: Cli, http: httpx.AsyncClient) -> None:
    created = cli("workspaces", "create", "cli-acme", "--plan", "professional")
    assert created.returncode == 0, created.stderr
    assert "plan PROFESSIONAL, retention 365 days" in created.stdout

    key = cli("keys", "create", "--workspace", "cli-acme", "--role", "admin", "--name", "ops")
    assert key.returncode == 0, key.stderr
    lines = key.stdout.strip().splitlines()
    token = lines[-1].split()[-1]
    assert token.startswith("alk_key_")
    assert lines[0].split()[2].startswith("key_")  # the key id comes first
    response = await http.post(
        "/graphql",
        json={"query": "{ workspace { id plan retentionDays } }"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.json()["data"]["workspace"] == {
        "id": "cli-acme",
        "plan": "PROFESSIONAL",
        "retentionDays": 365,
    }

    as_json = cli("keys", "create", "--workspace", "cli-acme", "--role", "ingest", "--json")
    data = json.loads(as_json.stdout)
    assert set(data) == {"id", "key"} and data["key"].startswith("alk_")

    revoked = cli("keys", "revoke", data["id"])
    assert revoked.returncode == 0, revoked.stderr
    refused = await http.post(
        "/v1/events", json=[], headers={"Authorization": f"Bearer {data['key']}"}
    )
    assert refused.status_code == 401

    upgraded = cli(
        "workspaces", "set-plan", "cli-acme", "--plan", "enterprise", "--retention-days", "730"
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert "retention 730 days" in upgraded.stdout


def test_cli_refusals_are_clear(cli: Cli) -> None:
    bad_plan = cli("workspaces", "create", "cli-x", "--plan", "gold")
    assert bad_plan.returncode != 0 and "invalid choice" in bad_plan.stderr
    custom = cli(
        "workspaces", "create", "cli-y", "--plan", "professional", "--retention-days", "30"
    )
    assert custom.returncode == 2
    assert "enterprise plan only" in custom.stderr
    bad_name = cli("workspaces", "create", "Bad Name!", "--plan", "enterprise")
    assert bad_name.returncode == 2 and "name" in bad_name.stderr
    platform_admin = cli("keys", "create", "--platform", "--role", "admin")
    assert platform_admin.returncode == 2 and "ingest" in platform_admin.stderr
    no_role = cli("keys", "create", "--workspace", "cli-acme")
    assert no_role.returncode == 2 and "--role" in no_role.stderr
    platform = cli("keys", "create", "--platform", "--json")  # an ingest key without --role
    assert platform.returncode == 0, platform.stderr
    assert json.loads(platform.stdout)["key"].startswith("alk_")
    unknown = cli("keys", "revoke", "key_does_not_exist")
    assert unknown.returncode == 2 and "no key" in unknown.stderr


async def test_health_endpoints(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    # The session's service has no REDIS_URL: its bus is in-process.
    assert (await http.get("/readyz")).json() == {"status": "ready", "bus": "memory"}


def test_demo_events_cover_every_category() -> None:
    events = demo_events()
    assert 5000 <= len(events) <= 5100
    now = datetime.now(UTC)
    assert all(not isinstance(validate_event(e, i, now), list) for i, e in enumerate(events))
    categories = {CATEGORY_OF[e["action"]] for e in events}
    assert len(categories) == 5
    failed_unusual = [
        e
        for e in events
        if e["action"] == "user.login.failed" and e["userAgent"].startswith("python")
    ]
    assert len(failed_unusual) >= 3
