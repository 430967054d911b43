"""Shortening a retention waits for a grace period, and a legal hold stops every
purge: through the real `auditlog` command (a subprocess against the test
database, as `serve` and cron run it). Far-past months of 2005 to 2009 are this
file's own; the database is shared by the whole session."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from auditlog.config import Settings
from auditlog.errors import ConfigError
from auditlog.runtime import Services
from auditlog.services import keys as key_service
from auditlog.services import workspaces as workspace_service
from auditlog.storage.retention import read_purge_records
from tests.conftest import SECRET_KEY, WorkspaceKeys, create_workspace_keys, event

CENTURY = 36500
SHORTER = 5000  # everything before about 2013 expires
EVENTS_QUERY = "{ auditEvents(first: 500) { edges { node { id occurredAt } } } }"


async def cli(
    services: Services, data_dir: Path, *args: str, grace: int | None = None
) -> tuple[int, str, str]:
    """`auditlog ARGS` with the session's data folder (its signing key seals the trees)."""
    env = {
        **os.environ,
        "DATABASE_URL": services.database_url,
        "AUDITLOG_DATA_DIR": str(data_dir),
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
    }
    env.pop("REDIS_URL", None)
    env.pop("AUDITLOG_RETENTION_GRACE_DAYS", None)
    if grace is not None:
        env["AUDITLOG_RETENTION_GRACE_DAYS"] = str(grace)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditlog.cli",
        *args,
        env=env,
        cwd=data_dir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def maintain(services: Services, data_dir: Path, grace: int | None = None) -> str:
    """One `auditlog maintain` pass that ran (default grace unless `grace` is given)."""
    for _ in range(50):
        code, out, err = await cli(services, data_dir, "maintain", grace=grace)
        assert code == 0, err
        if "another runner" not in out:
            return out
        await asyncio.sleep(0.2)
    raise AssertionError("maintenance never got its lock")


def at(year: int, month: int, count: int) -> list[dict[str, object]]:
    start = datetime(year, month, 3, tzinfo=UTC)
    return [event(occurredAt=(start + timedelta(hours=7 * i)).isoformat()) for i in range(count)]


async def count(owner: asyncpg.Connection, workspace_id: str, before: datetime) -> int:
    return int(
        await owner.fetchval(
            "SELECT count(*) FROM audit_events WHERE workspace_id = $1 AND occurred_at < $2",
            workspace_id,
            before,
        )
    )


async def in_month(owner: asyncpg.Connection, workspace_id: str, year: int, month: int) -> int:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return int(
        await owner.fetchval(
            "SELECT count(*) FROM audit_events WHERE workspace_id = $1 "
            "AND occurred_at >= $2 AND occurred_at < $3",
            workspace_id,
            start,
            end,
        )
    )


async def partition_exists(owner: asyncpg.Connection, name: str) -> bool:
    return bool(await owner.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def keys_for(services: Services, http: httpx.AsyncClient, name: str) -> WorkspaceKeys:
    """Admin and ingest keys for a workspace the command created."""
    made = {
        role: (
            await key_service.create_key(
                services.pool, services.ingestor, workspace_id=name, role=role
            )
        ).key
        for role in ("admin", "ingest")
    }
    return WorkspaceKeys(name, made["admin"], made["admin"], made["admin"], made["ingest"], http)


def new_name() -> str:
    return f"grace-{uuid.uuid4().hex[:10]}"


async def test_a_cut_by_set_plan_waits_for_the_grace_period(
    services: Services, http: httpx.AsyncClient, data_dir: Path, owner: asyncpg.Connection
) -> None:
    name = new_name()
    code, out, err = await cli(
        services, data_dir, "workspaces", "create", name, "--plan", "enterprise"
    )
    assert code == 0, err
    ws = await keys_for(services, http, name)
    now = datetime.now(UTC)
    batch = [
        event(occurredAt=(now - timedelta(days=d)).isoformat())
        for d in (200, 100, 10)
        for _ in "ab"
    ]
    assert (await ws.ingest(batch)).status_code == 202

    before = datetime.now(UTC)
    code, out, err = await cli(
        services, data_dir, "workspaces", "set-plan", name, "--plan", "enterprise",
        "--retention-days", "30",
    )  # fmt: skip
    after = datetime.now(UTC)
    assert code == 0, err
    assert f"workspace {name} updated: plan ENTERPRISE, retention 30 days" in out
    found = re.search(
        r"retention cut from unlimited to 30 days: events older than 30 days will be purged "
        r"from (\d{4}-\d\d-\d\d \d\d:\d\d) UTC \(after the 7-day grace period\)",
        out,
    )
    assert found, out
    purge_from = datetime.strptime(found[1], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert before + timedelta(days=7) - timedelta(minutes=1) <= purge_from
    assert purge_from <= after + timedelta(days=7, minutes=1)

    # Inside the grace period nothing the old retention kept is deleted...
    await maintain(services, data_dir)
    assert await count(owner, name, now - timedelta(days=30)) == 4
    assert await read_purge_records(owner, name) == []
    # ...while reads follow the new plan at once (docs/retention.md).
    body = await ws.gql(EVENTS_QUERY)
    shown = [e["node"]["occurredAt"] for e in body["data"]["auditEvents"]["edges"]]
    assert len(shown) >= 2
    assert all(datetime.fromisoformat(t) > now - timedelta(days=30) for t in shown)

    # Once the cut is older than the grace period (a grace of 0 here), the new bound applies.
    await maintain(services, data_dir, grace=0)
    assert await count(owner, name, now - timedelta(days=30)) == 0
    assert await count(owner, name, now - timedelta(days=9)) == 2
    # Per workspace: a partition drop's record counts every workspace of the month.
    purged = await owner.fetch(
        """SELECT payload::jsonb -> 'metadata' ->> 'events' AS n FROM audit_events
           WHERE workspace_id = $1 AND action = 'audit_log.retention.purged'""",
        name,
    )
    assert sum(int(r["n"]) for r in purged) == 4


async def test_set_plan_says_nothing_when_retention_grows(
    services: Services, data_dir: Path
) -> None:
    name = new_name()
    code, out, err = await cli(
        services, data_dir, "workspaces", "create", name, "--plan", "professional"
    )
    assert (code, "retention cut" in out) == (0, False), (out, err)
    for plan, extra, notice in (
        ("enterprise", (), None),  # 365 days to unlimited
        ("enterprise", ("--retention-days", "400"), "from unlimited to 400 days"),
        ("enterprise", ("--retention-days", "400"), None),  # unchanged
        ("professional", (), "from 400 days to 365 days"),
        ("enterprise", ("--retention-days", "1000"), None),
    ):
        code, out, err = await cli(
            services, data_dir, "workspaces", "set-plan", name, "--plan", plan, *extra
        )
        assert code == 0, err
        if notice is None:
            assert "retention cut" not in out, (plan, extra, out)
        else:
            assert f"retention cut {notice}" in out, out
    code, out, err = await cli(
        services, data_dir, "workspaces", "set-plan", name, "--plan", "early_access", grace=0
    )
    assert code == 0, err
    assert (
        "retention cut from 1000 days to 90 days: events older than 90 days will be purged "
        "at the next maintenance pass (no grace period)"
    ) in out


async def test_a_runtime_update_of_retention_does_not_shorten_the_bound(
    services: Services, http: httpx.AsyncClient, data_dir: Path, owner: asyncpg.Connection
) -> None:
    ws = await create_workspace_keys(services, http, "enterprise", retention_days=CENTURY)
    assert (await ws.ingest(at(2005, 3, 6))).status_code == 202
    horizon = datetime(2010, 1, 1, tzinfo=UTC)
    async with services.pool.acquire() as conn:
        # What a bug or an injection in the service could do: one UPDATE, backdated.
        await conn.execute(
            "UPDATE workspaces SET retention_days = 1, updated_at = '2000-01-01' WHERE id = $1",
            ws.id,
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO workspace_plan_history (workspace_id, changed_at, plan, "
                "retention_days) VALUES ($1, now() - interval '30 days', 'ENTERPRISE', 1)",
                ws.id,
            )

    await maintain(services, data_dir)
    assert await count(owner, ws.id, horizon) == 6
    bound, now = await owner.fetchrow("SELECT auditlog_purge_bound($1, NULL), now()", ws.id)
    assert bound == now - timedelta(days=CENTURY)

    await maintain(services, data_dir, grace=0)  # the change is real, only later
    assert await count(owner, ws.id, horizon) == 0


async def set_grace(owner: asyncpg.Connection, value: str | None) -> None:
    if value is None:
        await owner.execute("RESET auditlog.retention_grace_days")
    else:
        await owner.execute("SELECT set_config('auditlog.retention_grace_days', $1, false)", value)


async def bound_days(owner: asyncpg.Connection, workspace_id: str) -> int | None:
    """The purge bound, in days before now (None: nothing may be purged)."""
    bound, now = await owner.fetchrow("SELECT auditlog_purge_bound($1, NULL), now()", workspace_id)
    if bound is None:
        return None
    days, rest = divmod(now - bound, timedelta(days=1))
    assert rest == timedelta(0)
    return int(days)


async def test_the_bound_is_the_longest_retention_in_force_during_the_window(
    services: Services, http: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    """Simulated time: history rows written by the owner with older timestamps."""
    ws = await create_workspace_keys(services, http, "enterprise", retention_days=SHORTER)
    for days_ago, retention in ((30, None), (20, CENTURY), (10, 6000)):
        await owner.execute(
            "INSERT INTO workspace_plan_history (workspace_id, changed_at, plan, retention_days) "
            "VALUES ($1, now() - make_interval(days => $2), 'ENTERPRISE', $3)",
            ws.id,
            days_ago,
            retention,
        )
    # Rows no maintenance pass has seen yet count as changed now, whatever their
    # timestamp: a transaction left open for days commits a row stamped long ago.
    assert await bound_days(owner, ws.id) is None

    await owner.execute(
        "INSERT INTO workspace_plan_history_seen (workspace_id, changed_at, plan, seen_at) "
        "SELECT workspace_id, changed_at, plan, changed_at FROM workspace_plan_history "
        "WHERE workspace_id = $1",
        ws.id,
    )
    for grace, expected in (
        (None, 6000),  # the default, 7 days: 6000 was in force 7 days ago
        ("7", 6000),
        ("15", CENTURY),
        ("25", None),  # unlimited 25 days ago: nothing may be purged
        ("0", SHORTER),
        ("-3", SHORTER),  # clamped to 0
    ):
        await set_grace(owner, grace)
        assert await bound_days(owner, ws.id) == expected, grace

    # A late-committed row stamped 8 days ago is in the window until seen 7 days ago.
    await owner.execute(
        "INSERT INTO workspace_plan_history (workspace_id, changed_at, plan, retention_days) "
        "VALUES ($1, now() - interval '8 days', 'ENTERPRISE', 1)",
        ws.id,
    )
    await set_grace(owner, "7")
    assert await bound_days(owner, ws.id) == 6000
    await owner.execute("SELECT auditlog_observe_plan_history()")
    assert await bound_days(owner, ws.id) == 6000

    await set_grace(owner, "seven")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="retention_grace_days"):
        await bound_days(owner, ws.id)
    await set_grace(owner, None)


async def test_a_legal_hold_stops_every_purge_until_released(
    services: Services, http: httpx.AsyncClient, data_dir: Path, owner: asyncpg.Connection
) -> None:
    held = await create_workspace_keys(services, http, "enterprise", retention_days=CENTURY)
    sharing = await create_workspace_keys(services, http, "enterprise", retention_days=CENTURY)
    keeping = await create_workspace_keys(services, http, "enterprise", retention_days=CENTURY)
    assert (await held.ingest(at(2006, 4, 5) + at(2006, 5, 3))).status_code == 202
    assert (await sharing.ingest(at(2006, 4, 4))).status_code == 202
    assert (await keeping.ingest(at(2006, 5, 2))).status_code == 202
    reason = "Litigation hold: Doe v. Acme, case 26-1234 (legal@acme.io)"

    code, out, err = await cli(
        services, data_dir, "workspaces", "hold", held.id, "--reason", reason
    )
    assert code == 0, err
    assert f"legal hold placed on workspace {held.id}" in out
    code, out, err = await cli(
        services, data_dir, "workspaces", "hold", held.id, "--reason", "again"
    )
    assert code == 2, out
    assert f"workspace {held.id!r} is already under a legal hold" in err

    # Only the owner writes holds, and nobody rewrites them.
    async with services.pool.acquire() as conn:
        for statement in (
            "INSERT INTO retention_holds (workspace_id, action) VALUES ($1, 'released')",
            "DELETE FROM retention_holds WHERE workspace_id = $1",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement, held.id)
    for statement in (
        "DELETE FROM retention_holds WHERE workspace_id = $1",
        "UPDATE retention_holds SET action = 'released' WHERE workspace_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await owner.execute(statement, held.id)

    for ws in (held, sharing):
        await workspace_service.set_plan(services.pool, ws.id, "enterprise", SHORTER)
    out = await maintain(services, data_dir, grace=0)
    # The month held and sharing have to themselves stays; sharing's rows go one by one.
    assert await partition_exists(owner, "audit_events_2006_04")
    assert (await in_month(owner, held.id, 2006, 4), await in_month(owner, held.id, 2006, 5)) == (
        5,
        3,
    )
    assert await in_month(owner, sharing.id, 2006, 4) == 0
    assert await in_month(owner, keeping.id, 2006, 5) == 2
    assert await read_purge_records(owner, held.id) == []
    assert re.search(rf"maintenance: legal hold \(nothing purged\): .*{held.id}", out), out

    code, out, err = await cli(services, data_dir, "workspaces", "release", held.id)
    assert code == 0, err
    assert f"legal hold on workspace {held.id} released" in out
    code, out, err = await cli(services, data_dir, "workspaces", "release", held.id)
    assert code == 2, out
    assert f"workspace {held.id!r} is not under a legal hold" in err

    await maintain(services, data_dir)  # released inside the grace window: still kept
    assert await in_month(owner, held.id, 2006, 4) == 5
    await maintain(services, data_dir, grace=0)
    assert not await partition_exists(owner, "audit_events_2006_04")
    assert await in_month(owner, held.id, 2006, 5) == 0
    assert sum(r.events_deleted for r in await read_purge_records(owner, held.id)) == 8

    events = await owner.fetch(
        "SELECT action, category, payload FROM audit_events WHERE workspace_id = $1 "
        "AND action LIKE 'audit_log.retention.hold_%' ORDER BY seq",
        held.id,
    )
    assert [(e["action"], e["category"]) for e in events] == [
        ("audit_log.retention.hold_placed", "WORKSPACE"),
        ("audit_log.retention.hold_released", "WORKSPACE"),
    ]
    for e in events:
        payload = json.loads(e["payload"])
        assert payload["metadata"]["reason"] == reason
        assert payload["actor"]["type"] == "SYSTEM"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hold", "{name}"], "the following arguments are required: --reason"),
        (["hold", "{name}", "--reason", ""], "reason: must be 1 to 500 characters"),
        (["hold", "{name}", "--reason", "   "], "reason: must be 1 to 500 characters"),
        (["hold", "{name}", "--reason", "x" * 501], "reason: must be 1 to 500 characters"),
        (["hold", "nobody-here", "--reason", "audit"], "no workspace 'nobody-here'"),
        (["release", "nobody-here"], "no workspace 'nobody-here'"),
    ],
)
async def test_hold_arguments_are_checked(
    services: Services,
    http: httpx.AsyncClient,
    data_dir: Path,
    owner: asyncpg.Connection,
    args: list[str],
    message: str,
) -> None:
    ws = await create_workspace_keys(services, http, "professional")
    args = [a.replace("{name}", ws.id) for a in args]
    code, out, err = await cli(services, data_dir, "workspaces", *args)
    assert code == 2, (out, err)
    assert message in err
    assert (
        await owner.fetchval("SELECT count(*) FROM retention_holds WHERE workspace_id = $1", ws.id)
        == 0
    )


def test_the_grace_period_setting() -> None:
    assert Settings.from_env({}).retention_grace_days == 7
    assert Settings.from_env({"AUDITLOG_RETENTION_GRACE_DAYS": "0"}).retention_grace_days == 0
    assert Settings.from_env({"AUDITLOG_RETENTION_GRACE_DAYS": "30"}).retention_grace_days == 30
    for bad in ("-1", "seven", "366"):
        with pytest.raises(ConfigError, match="AUDITLOG_RETENTION_GRACE_DAYS"):
            Settings.from_env({"AUDITLOG_RETENTION_GRACE_DAYS": bad})
