"""A primary and a hot standby of a test's own: Debian's PostgreSQL binaries, a temp
folder, free ports; the standby made with `pg_basebackup -R` (streaming replication).
Never the shared server."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time

import asyncpg

from tests.conftest import free_port
from tests.postgres_server import PostgresServer, _bin_dir, unavailable_reason


def replica_unavailable_reason() -> str | None:
    reason = unavailable_reason()
    if reason is not None:
        return reason
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "pg_basebackup").exists():
        return f"pg_basebackup is not in {bin_dir} (Debian's postgresql server package)"
    return None


class ReplicatedPostgres:
    """`primary` (wal_level replica) and `standby` (hot_standby, streaming from it)."""

    def __init__(self) -> None:
        self.primary = PostgresServer()
        self.standby = PostgresServer()
        # The standby lives beside the primary, in its folder (cleaned up with it).
        shutil.rmtree(self.standby.root, ignore_errors=True)
        self.standby.root = self.primary.root
        self.standby.data = self.primary.root / "standby"
        self.standby.port = free_port()

    def start(self) -> None:
        self.primary.init()
        self.primary.start()
        self.primary._run(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres"),
            *("-D", str(self.standby.data), "-R", "-X", "stream", "--no-sync"),
        )
        log = self.primary.root / "standby.log"
        options = (
            f"-p {self.standby.port} -k {self.primary.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c hot_standby=on -c max_connections=50"
        )
        self.standby._run(
            "pg_ctl",
            *("-D", str(self.standby.data), "-l", str(log), "-o", options),
            *("-w", "-t", "30", "start"),
        )

    def url(self, server: PostgresServer, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{server.port}/{database}"

    def stop_standby(self) -> None:
        self.standby._run("pg_ctl", "-D", str(self.standby.data), "-m", "immediate", "stop")

    def cleanup(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.standby._run("pg_ctl", "-D", str(self.standby.data), "-m", "immediate", "stop")
        self.primary.cleanup()


async def wait_replayed(primary_url: str, standby_url: str, within: float = 20) -> None:
    """Until the standby has replayed everything the primary has written so far."""
    async with contextlib.AsyncExitStack() as stack:
        p = await asyncpg.connect(primary_url)
        stack.push_async_callback(p.close)
        s = await asyncpg.connect(standby_url)
        stack.push_async_callback(s.close)
        # The insert position: a commit not flushed yet (asynchronous, as a transaction
        # that wrote nothing commits) is sent and replayed too.
        target = await p.fetchval("SELECT pg_current_wal_insert_lsn()")
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await s.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target):
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"the standby did not replay {target} within {within} s")
