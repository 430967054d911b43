"""The real `auditlog` command, as a subprocess against the test database:
plans and retention refused with a clear message, and `maintain`."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from pathlib import Path

import pytest

from auditlog.runtime import Services
from tests.conftest import SECRET_KEY


async def auditlog(services: Services, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": services.database_url,
        "AUDITLOG_DATA_DIR": str(tmp_path),
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
    }
    env.pop("REDIS_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditlog.cli",
        *args,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def new_name() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plan", "gold"], "argument --plan: invalid choice: 'gold'"),
        (
            ["--plan", "professional", "--retention-days", "100"],
            "retention-days: a custom retention is available on the enterprise plan only",
        ),
        (["--plan", "early_access", "--retention-days", "30"], "enterprise plan only"),
        (
            ["--plan", "enterprise", "--retention-days", "0"],
            "retention-days: must be between 1 and 36500",
        ),
        (["--plan", "enterprise", "--retention-days", "40000"], "must be between 1 and 36500"),
        (
            ["--plan", "enterprise", "--retention-days", "ten"],
            "argument --retention-days: invalid int value: 'ten'",
        ),
        ([], "the following arguments are required: --plan"),
    ],
)
async def test_invalid_plan_or_retention_is_refused_clearly(
    services: Services, tmp_path: Path, args: list[str], message: str
) -> None:
    name = new_name()
    for command in ("create", "set-plan"):
        code, out, err = await auditlog(services, tmp_path, "workspaces", command, name, *args)
        assert code == 2, (out, err)
        assert message in err
    async with services.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM workspaces WHERE id = $1", name) == 0


async def test_plans_change_through_the_command(services: Services, tmp_path: Path) -> None:
    name = new_name()
    code, out, err = await auditlog(
        services,
        tmp_path,
        "workspaces",
        "create",
        name,
        "--plan",
        "ENTERPRISE",
        "--retention-days",
        "400",
    )
    assert code == 0, err
    assert f"workspace {name} created: plan ENTERPRISE, retention 400 days" in out
    code, out, err = await auditlog(
        services, tmp_path, "workspaces", "set-plan", name, "--plan", "early_access"
    )
    assert code == 0, err
    assert "plan EARLY_ACCESS, retention 90 days" in out
    code, out, err = await auditlog(
        services, tmp_path, "workspaces", "set-plan", name, "--plan", "enterprise"
    )
    assert "plan ENTERPRISE, retention unlimited" in out
    code, _, err = await auditlog(
        services, tmp_path, "workspaces", "set-plan", new_name(), "--plan", "professional"
    )
    assert code == 2
    assert "no workspace" in err


async def test_maintain_runs_one_pass(services: Services, tmp_path: Path) -> None:
    for _ in range(20):
        code, out, err = await auditlog(services, tmp_path, "maintain")
        assert code == 0, err
        if "another runner" not in out:
            break
    assert "maintenance: partitions created" in out
    assert re.search(r"maintenance: integrity: \d+ events sealed", out), out
    code, _, err = await auditlog(services, tmp_path, "maintain", "--batch-size", "0")
    assert code == 2
    assert "--batch-size: must be between 1 and 50000" in err
