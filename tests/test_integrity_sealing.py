"""Sealing as it runs for real: under concurrent ingest with a transaction held
open, with several sealers in several processes, across a key rotation done with
the real CLI, and across a retention purge. Every tree is checked against the
events in ingest order with the independent verifier (tests/integrity_verifier.py).

The module has a database of its own: `verify --database` checks every workspace."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from auditlog.runtime import Services
from auditlog.services import integrity as svc
from auditlog.services import workspaces as workspace_service
from tests import integrity_verifier as v
from tests.conftest import (
    SECRET_KEY,
    RunningService,
    SpareDatabases,
    WorkspaceKeys,
    create_workspace_keys,
    event,
    free_port,
    make_settings,
    start_service,
    stop_service,
)
from tests.integrity_support import (
    checkpoints,
    events,
    gql_data,
    integrity_keys,
    isolated_service,
    run_auditlog,
    seal,
)


@dataclass
class Module:
    service: RunningService
    http: httpx.AsyncClient
    data_dir: Path

    @property
    def services(self) -> Services:
        return self.service.services

    @property
    def url(self) -> str:
        return self.services.database_url


@pytest.fixture(scope="module")
async def module(
    spare_databases: SpareDatabases, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Module]:
    data_dir = tmp_path_factory.mktemp("sealing")
    async with (
        isolated_service(spare_databases, data_dir) as service,
        httpx.AsyncClient(base_url=service.base_url, timeout=30) as http,
    ):
        yield Module(service, http, data_dir)


async def _owner(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


@dataclass
class Stored:
    """A workspace's tree and events as the database holds them."""

    leaf_ids: list[str]
    leaf_hashes: list[bytes]
    event_ids: list[str]  # in ingest order (xid, seq)
    event_xids: list[int]
    payloads: list[Any]
    checkpoints: list[asyncpg.Record]  # by tree size


async def stored(url: str, workspace_id: str) -> Stored:
    conn = await _owner(url)
    try:
        runs = await conn.fetch(
            """SELECT start_index, hashes, ids FROM integrity_leaves
               WHERE workspace_id = $1 ORDER BY start_index""",
            workspace_id,
        )
        rows = await conn.fetch(
            """SELECT id, xid::text::bigint AS xid, payload FROM audit_events
               WHERE workspace_id = $1 ORDER BY xid, seq""",
            workspace_id,
        )
        cps = await conn.fetch(
            """SELECT tree_size, root_hash, signed_note, sealed_at FROM integrity_checkpoints
               WHERE workspace_id = $1 ORDER BY tree_size""",
            workspace_id,
        )
    finally:
        await conn.close()
    ids: list[str] = []
    hashes: list[bytes] = []
    for run in runs:
        assert run["start_index"] == len(ids), "leaf runs are contiguous"
        ids.extend(str(i) for i in run["ids"])
        blob = bytes(run["hashes"])
        hashes.extend(blob[k : k + 32] for k in range(0, len(blob), 32))
    return Stored(
        ids,
        hashes,
        [str(r["id"]) for r in rows],
        [r["xid"] for r in rows],
        [orjson.loads(r["payload"]) for r in rows],
        list(cps),
    )


def assert_one_tree(s: Stored, keys: list[str]) -> None:
    """Leaf i is the i-th event in ingest order, every event a leaf once, and every
    checkpoint signs the root of the events before it, sizes increasing with time."""
    assert len(set(s.leaf_ids)) == len(s.leaf_ids), "no event is a leaf twice"
    assert s.leaf_ids == s.event_ids, "leaf i is the i-th event in ingest order"
    assert s.leaf_hashes == [v.event_leaf(p) for p in s.payloads]
    previous: datetime | None = None
    for cp in s.checkpoints:
        size = cp["tree_size"]
        expected = v.root_of_leaf_hashes(s.leaf_hashes[:size])
        assert bytes(cp["root_hash"]) == expected, size
        opened = [c for c in (_try_open(cp["signed_note"], k) for k in keys) if c is not None]
        assert opened and opened[0].tree_size == size and opened[0].root == expected, size
        if previous is not None:
            assert cp["sealed_at"] >= previous, f"size {size} was signed before a smaller one"
        previous = cp["sealed_at"]


def _try_open(note: str, key: str) -> v.Checkpoint | None:
    try:
        return v.open_checkpoint(note, key)
    except v.NotVerified:
        return None


async def _ingest_from(base_url: str, ws: WorkspaceKeys, tag: str, rounds: int) -> int:
    """One HTTP client of its own ingesting small batches; how many events it sent."""
    sent = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for r in range(rounds):
            batch = [event(metadata={"client": tag, "round": r, "i": i}) for i in range(1 + r % 4)]
            response = await client.post("/v1/events", json=batch, headers=ws.auth(ws.ingest_key))
            assert response.status_code == 202, response.text
            sent += len(batch)
    return sent


@pytest.mark.slow
async def test_sealing_under_concurrent_ingest_never_passes_an_open_transaction(
    module: Module,
) -> None:
    services = module.services
    ws = await create_workspace_keys(services, module.http)
    signer = services.signing_keys.current()
    stop = asyncio.Event()

    async def sealer() -> int:
        rounds = 0
        async with services.pool.acquire() as conn:
            while not stop.is_set():
                await svc.seal_until_caught_up(conn, ws.id, signer, batch=7)
                rounds += 1
                await asyncio.sleep(0.005)
        return rounds

    async def clients(tag: str) -> int:
        sent = await asyncio.gather(
            *(_ingest_from(module.service.base_url, ws, f"{tag}{c}", 8) for c in range(4))
        )
        return sum(sent)

    sealing = asyncio.create_task(sealer())
    await clients("before-")
    # A write through the ingest path, held open on a connection of its own.
    held = await services.pool.acquire()
    tx = held.transaction()
    await tx.start()
    try:
        now = datetime.now(UTC)
        validated = services.ingestor.validate(
            [event(metadata={"held": i}) for i in range(5)], ws.id, now
        )
        result = await services.ingestor.append(validated, ws.id, now, conn=held)
        held_xid = int(await held.fetchval("SELECT pg_current_xact_id()::text::bigint"))
        held_ids = result.ids
        await clients("during-")
        # Every event committed before the held one is sealed, nothing after it.
        committed_before = 0
        for _ in range(200):
            s = await stored(module.url, ws.id)
            committed_before = sum(1 for x in s.event_xids if x < held_xid)
            if len(s.leaf_ids) >= committed_before:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # a few more sealing rounds while it is still open
        s = await stored(module.url, ws.id)
        after = sum(1 for x in s.event_xids if x > held_xid)
        assert after > 0, "events committed after the held transaction began"
        assert len(s.leaf_ids) == committed_before, "the tree stops at the open transaction"
        assert s.leaf_ids == s.event_ids[: len(s.leaf_ids)]
        assert not set(held_ids) & set(s.leaf_ids)
        size_at_commit = len(s.leaf_ids)
        await tx.commit()
    except BaseException:
        await tx.rollback()
        raise
    finally:
        await services.pool.release(held)
    await clients("after-")
    stop.set()
    assert await sealing > 0
    await seal(services, ws.id)

    s = await stored(module.url, ws.id)
    assert len(s.leaf_ids) == len(s.event_ids) == 4 + 3 * 4 * sum(1 + r % 4 for r in range(8)) + 5
    # The held events come right after what was sealed while they were uncommitted.
    assert s.leaf_ids[size_at_commit : size_at_commit + 5] == held_ids
    _, _, keys = await integrity_keys(ws)
    assert_one_tree(s, keys)


async def test_a_larger_checkpoint_is_never_dated_before_a_smaller_one(module: Module) -> None:
    # A sealer's transaction can begin while another sealer holds the workspace and
    # get the lock once that one commits: its checkpoint is still the later one.
    services = module.services
    ws = await create_workspace_keys(services, module.http)
    signer = services.signing_keys.current()
    async with services.pool.acquire() as late, services.pool.acquire() as early:
        tx = late.transaction()
        await tx.start()
        try:
            await late.execute("SELECT 1")  # the transaction has begun
            await asyncio.sleep(0.01)
            first = await svc.seal_workspace(early, ws.id, signer, batch=2)
            assert first is not None
            second = await svc.seal_workspace(late, ws.id, signer)
            assert second is not None
        finally:
            await tx.commit()
    assert (first.checkpoint.tree_size, second.checkpoint.tree_size) == (2, 4)
    assert second.checkpoint.sealed_at > first.checkpoint.sealed_at
    cps = await checkpoints(ws)
    assert [c["treeSize"] for c in sorted(cps, key=lambda c: c["sealedAt"])] == [2, 4]


SEALER_SCRIPT = """
import asyncio, sys
from auditlog.config import Settings
from auditlog.integrity.keys import SigningKeys
from auditlog.services.integrity import seal_all
from auditlog.storage.database import owner_connection

async def main(seconds):
    settings = Settings.from_env()
    keys = SigningKeys(settings)
    async with owner_connection(settings.database_url) as conn:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        passes = 0
        while loop.time() < end:
            await seal_all(conn, keys.current())
            passes += 1
    print("passes", passes)

asyncio.run(main(float(sys.argv[1])))
"""


async def _start(module: Module, *args: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "DATABASE_URL": module.url,
        "AUDITLOG_DATA_DIR": str(module.data_dir),
        "AUDITLOG_SECRET_KEY": SECRET_KEY,
        "AUDITLOG_SEAL_INTERVAL_SECONDS": "0.02",
    }
    for name in ("REDIS_URL", "AUDITLOG_SIGNING_KEY", "AUDITLOG_LOG_NAME"):
        env.pop(name, None)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=env,
        cwd=module.data_dir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.slow
async def test_many_sealers_at_once_build_one_tree_per_workspace(module: Module) -> None:
    services = module.services
    workspaces = [await create_workspace_keys(services, module.http) for _ in range(3)]
    # Two OS processes: a real `auditlog worker` (its sealer every 20 ms) and a
    # script sealing every workspace as fast as it can; plus two sealers in here.
    worker = await _start(module, "-m", "auditlog.cli", "worker")
    script = await _start(module, "-c", SEALER_SCRIPT, "4")
    stop = asyncio.Event()
    signer = services.signing_keys.current()

    async def in_process(batch: int) -> None:
        async with services.pool.acquire() as conn:
            while not stop.is_set():
                for ws in workspaces:
                    await svc.seal_until_caught_up(conn, ws.id, signer, batch=batch)
                await svc.seal_all(conn, signer)

    local = [asyncio.create_task(in_process(b)) for b in (3, 11)]
    try:
        await asyncio.gather(
            *(
                _ingest_from(module.service.base_url, ws, f"c{c}", 12)
                for ws in workspaces
                for c in range(2)
            )
        )
        stop.set()
        await asyncio.gather(*local)
        out, err = await asyncio.wait_for(script.communicate(), timeout=30)
        assert script.returncode == 0, err.decode()
        assert "passes" in out.decode()
        # The worker keeps sealing: everything gets sealed without anyone else.
        for ws in workspaces:
            for _ in range(300):
                s = await stored(module.url, ws.id)
                if len(s.leaf_ids) == len(s.event_ids):
                    break
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        _, worker_err = await asyncio.wait_for(worker.communicate(), timeout=30)
        if script.returncode is None:
            script.kill()
            await script.wait()
    assert worker.returncode == 0, worker_err.decode()
    assert "sealing pass failed" not in worker_err.decode(), worker_err.decode()
    assert "Traceback" not in worker_err.decode(), worker_err.decode()
    for ws in workspaces:
        s = await stored(module.url, ws.id)
        assert len(s.leaf_ids) == len(s.event_ids) == 4 + 2 * sum(1 + r % 4 for r in range(12))
        assert len(s.checkpoints) > 1
        _, _, keys = await integrity_keys(ws)
        assert_one_tree(s, keys)
    code, out, err = await run_auditlog(module.url, module.data_dir, "verify", "--database")
    assert code == 0, out + err


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.slow
async def test_a_key_rotated_with_the_cli_keeps_old_checkpoints_verifiable(
    module: Module, tmp_path: Path
) -> None:
    # A service of its own on the module's database, its key generated in tmp_path.
    running = await start_service(make_settings(module.url, tmp_path))
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
            ws = await create_workspace_keys(running.services, http)
            _, old_key, _ = await integrity_keys(ws)
            assert _mode(tmp_path / "signing_key") == 0o600
            code, out, err = await run_auditlog(module.url, tmp_path, "integrity", "verifier-key")
            assert (code, out.strip()) == (0, old_key), err
            assert await seal(running.services, ws.id) == 4
            before = (await checkpoints(ws))[-1]

            code, out, err = await run_auditlog(module.url, tmp_path, "integrity", "rotate-key")
            assert code == 0, err
            assert f"retired verifier key (still listed, still verifies): {old_key}" in out
            new_key = out.strip().splitlines()[-1].removeprefix("new verifier key: ")
            assert new_key != old_key
            v.parse_verifier_key(new_key)
            assert _mode(tmp_path / "signing_key") == 0o600
            code, out, err = await run_auditlog(module.url, tmp_path, "integrity", "verifier-key")
            assert (code, out.strip()) == (0, new_key), err

            # The running service notices the new file at its next seal.
            assert (await ws.ingest([event() for _ in range(3)])).status_code == 202
            assert await seal(running.services, ws.id) == 7
            after = (await checkpoints(ws))[-1]
            assert v.open_checkpoint(before["signedNote"], old_key).tree_size == 4
            assert v.open_checkpoint(after["signedNote"], new_key).tree_size == 7
            assert not v.opens(before["signedNote"].encode(), new_key)
            assert not v.opens(after["signedNote"].encode(), old_key)

            _, current, listed = await integrity_keys(ws)
            assert current == new_key and listed[0] == new_key and old_key in listed
            published = (await http.get("/v1/integrity/verifier-keys")).text.splitlines()
            assert published[0] == new_key and old_key in published
            # A proof across the rotation: old checkpoint to new, each with its own key.
            data = await gql_data(ws, "{ integrity { consistencyProof(fromSize: 4, toSize: 7) } }")
            proof = v.b64decode_all(data["integrity"]["consistencyProof"])
            old_root = v.open_checkpoint(before["signedNote"], old_key).root
            new_root = v.open_checkpoint(after["signedNote"], new_key).root
            assert v.verify_consistency(4, 7, old_root, new_root, proof)
    finally:
        await stop_service(running)
    code, out, err = await run_auditlog(module.url, tmp_path, "verify", "--database")
    assert code == 0, out + err


async def test_a_malformed_signing_key_is_refused_naming_the_variable(
    module: Module, tmp_path: Path
) -> None:
    garbage = {"AUDITLOG_SIGNING_KEY": "not-a-seed"}
    code, out, err = await run_auditlog(
        module.url, tmp_path, "integrity", "verifier-key", env=garbage
    )
    assert code == 2 and "AUDITLOG_SIGNING_KEY" in err, (out, err)
    assert not (tmp_path / "signing_key").exists()
    port = str(free_port())
    code, out, err = await run_auditlog(
        module.url, tmp_path, "serve", "--port", port, "--no-background", env=garbage
    )
    assert code != 0 and "AUDITLOG_SIGNING_KEY" in out + err, (out, err)
    short = {"AUDITLOG_SIGNING_KEY": base64.b64encode(bytes(31)).decode()}
    code, out, err = await run_auditlog(
        module.url, tmp_path, "integrity", "verifier-key", env=short
    )
    assert code == 2 and "AUDITLOG_SIGNING_KEY" in err, (out, err)


async def test_an_unreadable_key_file_is_refused_naming_the_file(
    module: Module, tmp_path: Path
) -> None:
    # Tests run as root, for whom no file mode is unreadable: a directory is.
    (tmp_path / "signing_key").mkdir()
    code, out, err = await run_auditlog(module.url, tmp_path, "integrity", "verifier-key")
    assert code == 2 and str(tmp_path / "signing_key") in err, (out, err)
    code, out, err = await run_auditlog(
        module.url, tmp_path, "serve", "--port", str(free_port()), "--no-background"
    )
    assert code != 0 and str(tmp_path / "signing_key") in out + err, (out, err)
    (tmp_path / "signing_key").rmdir()
    (tmp_path / "signing_key").write_text("AAAA\n")  # readable, but no seed
    code, out, err = await run_auditlog(module.url, tmp_path, "integrity", "verifier-key")
    assert code == 2 and str(tmp_path / "signing_key") in err, (out, err)


CENTURY, SHORTER = 36500, 5000  # the first admits events of 2001; the second expires them


@pytest.mark.slow
async def test_a_retention_purge_keeps_the_tree_verifiable(module: Module) -> None:
    services = module.services
    ws = await create_workspace_keys(services, module.http, retention_days=CENTURY)
    old_start = datetime(2001, 3, 3, tzinfo=UTC)
    old = [event(occurredAt=(old_start + timedelta(hours=5 * i)).isoformat()) for i in range(10)]
    assert (await ws.ingest(old)).status_code == 202
    assert (await ws.ingest([event() for _ in range(3)])).status_code == 202
    assert await seal(services, ws.id) == 17
    _, key, _ = await integrity_keys(ws)
    held = v.open_checkpoint((await checkpoints(ws))[-1]["signedNote"], key)
    before = {e["id"]: e for e in await events(ws)}

    await workspace_service.set_plan(services.pool, ws.id, "enterprise", SHORTER)
    no_grace = {"AUDITLOG_RETENTION_GRACE_DAYS": "0"}  # the cut applies at once
    for _ in range(50):  # another test's or process's pass may hold the lock
        code, out, err = await run_auditlog(module.url, module.data_dir, "maintain", env=no_grace)
        assert code == 0, err
        if "another runner" not in out:
            break
        await asyncio.sleep(0.1)
    assert "maintenance: purged" in out, out
    assert await seal(services, ws.id) == 18  # the purge's own event

    code, out, err = await run_auditlog(module.url, module.data_dir, "verify", "--database")
    assert code == 0, out + err
    assert f"workspace {ws.id}: 18 leaves, 8 events match, 10 purged by retention" in out, out

    shown = await events(ws)
    kept = {e["id"] for e in shown if e["payload"]["action"] != "audit_log.retention.purged"}
    assert kept == set(before) - {e["id"] for e in old}
    (purged,) = [e for e in shown if e["payload"]["action"] == "audit_log.retention.purged"]
    metadata = purged["payload"]["metadata"]
    assert metadata["events"] == 10
    bound = datetime.fromisoformat(metadata["occurredBefore"].replace("Z", "+00:00"))
    assert old_start + timedelta(hours=45) < bound <= datetime.now(UTC) - timedelta(days=SHORTER)
    for e in shown:  # the remaining events kept their leaves
        if e["id"] in before:
            assert e["leafIndex"] == before[e["id"]]["leafIndex"]

    latest = v.open_checkpoint((await checkpoints(ws))[-1]["signedNote"], key)
    assert latest.tree_size == 18
    fields = " ".join(
        f'e{k}: auditEvent(id: "{e["id"]}") {{ payload inclusionProof {{ leafIndex hashes }} }}'
        for k, e in enumerate(shown)
    )
    data = await gql_data(ws, "{ " + fields + " }")
    for k in range(len(shown)):
        node = data[f"e{k}"]
        proof = node["inclusionProof"]
        hashes = v.b64decode_all(proof["hashes"])
        leaf = v.event_leaf(node["payload"])
        assert v.verify_inclusion(leaf, proof["leafIndex"], 18, hashes, latest.root)
    data = await gql_data(
        ws,
        "query($a: Int!) { integrity { consistencyProof(fromSize: $a, toSize: 18) } }",
        {"a": held.tree_size},
    )
    proof = v.b64decode_all(data["integrity"]["consistencyProof"])
    assert v.verify_consistency(held.tree_size, 18, held.root, latest.root, proof)
