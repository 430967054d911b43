"""Tampering as the database superuser (every user trigger off), caught twice: by
the real `auditlog verify --database`, which must exit non-zero naming the event
or the checkpoint, and by the independent verifier holding a checkpoint signed
before the tampering, which must no longer match what the log now shows.

Every test runs on a database of its own, since `verify --database` checks every
workspace it finds; nothing is restored afterwards, the database is dropped.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import integrity_verifier as v
from tests.conftest import RunningService, SpareDatabases, WorkspaceKeys, event
from tests.integrity_support import (
    gql_data,
    integrity_keys,
    isolated_service,
    new_workspace,
    payloads_in_ingest_order,
    run_auditlog,
    seal,
    superuser,
)

pytestmark = pytest.mark.slow

INGESTED = 20
SIZE = 4 + INGESTED  # the workspace's 4 key events come first


@dataclass
class Held:
    """A checkpoint a verifier kept from before the tampering, opened with the pinned key."""

    note: str
    tree_size: int
    root: bytes


@dataclass
class Log:
    service: RunningService
    ws: WorkspaceKeys
    data_dir: Path
    key: str  # the pinned verifier key

    @property
    def url(self) -> str:
        return self.service.services.database_url

    async def verify(self) -> tuple[int, str]:
        code, out, err = await run_auditlog(self.url, self.data_dir, "verify", "--database")
        return code, out + err

    async def hold(self) -> Held:
        data = await gql_data(self.ws, "{ integrity { latest { signedNote } } }")
        note = data["integrity"]["latest"]["signedNote"]
        cp = v.open_checkpoint(note, self.key)
        return Held(note, cp.tree_size, cp.root)

    async def ingest_and_seal(self, count: int, batch: int | None = None, **kw: Any) -> int:
        r = await self.ws.ingest([event(metadata={"later": i, **kw}) for i in range(count)])
        assert r.status_code == 202, r.text
        return await seal(self.service.services, self.ws.id, *([batch] if batch else []))

    async def in_ingest_order(self) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.url)
        try:
            return await conn.fetch(
                """SELECT id, xid::text AS xid, seq, payload FROM audit_events
                   WHERE workspace_id = $1 ORDER BY xid, seq""",
                self.ws.id,
            )
        finally:
            await conn.close()

    async def replayed_root(self, size: int) -> bytes | None:
        """The root the log's events, as the database now holds them in ingest order,
        give for a tree of `size` leaves; None when there are fewer events."""
        payloads = await payloads_in_ingest_order(self.url, self.ws.id)
        return v.root_of_payloads(payloads[:size]) if len(payloads) >= size else None


@pytest.fixture
async def log(spare_databases: SpareDatabases, tmp_path: Path) -> AsyncIterator[Log]:
    """A workspace of 24 sealed events on a database of its own, verifying clean."""
    async with (
        isolated_service(spare_databases, tmp_path) as service,
        httpx.AsyncClient(base_url=service.base_url, timeout=30) as http,
    ):
        ws = await new_workspace(service, http)
        r = await ws.ingest([event(metadata={"n": i}) for i in range(INGESTED)])
        assert r.status_code == 202, r.text
        assert await seal(service.services, ws.id) == SIZE
        _, key, _ = await integrity_keys(ws)
        yield Log(service, ws, tmp_path, key)


def named(output: str, *needles: str) -> bool:
    return all(n in output for n in needles)


async def inclusion_against(log: Log, event_id: str, held: Held) -> bool:
    """Does the service's answer for this event still prove it in the held checkpoint?"""
    data = await gql_data(
        log.ws,
        """query($id: ID!, $n: Int) { auditEvent(id: $id) { payload leafIndex
             inclusionProof(treeSize: $n) { leafIndex hashes } } }""",
        {"id": event_id, "n": held.tree_size},
    )
    node = data["auditEvent"]
    if node is None or node["inclusionProof"] is None:
        return False
    proof = node["inclusionProof"]
    return v.verify_inclusion(
        v.event_leaf(node["payload"]),
        proof["leafIndex"],
        held.tree_size,
        v.b64decode_all(proof["hashes"]),
        held.root,
    )


async def consistent_with(log: Log, held: Held) -> bool:
    """Does the service's latest checkpoint extend the held one, by the service's own proof?"""
    data = await gql_data(log.ws, "{ integrity { latest { signedNote } } }")
    latest = v.open_checkpoint(data["integrity"]["latest"]["signedNote"], log.key)
    body = await log.ws.gql(
        "query($a: Int!, $b: Int!) { integrity { consistencyProof(fromSize: $a, toSize: $b) } }",
        {"a": held.tree_size, "b": latest.tree_size},
    )
    if body.get("errors"):
        return False  # the service cannot even prove it
    proof = v.b64decode_all(body["data"]["integrity"]["consistencyProof"])
    return v.verify_consistency(held.tree_size, latest.tree_size, held.root, latest.root, proof)


async def test_an_untouched_database_verifies(log: Log) -> None:
    await log.ingest_and_seal(3)
    code, output = await log.verify()
    assert code == 0, output
    assert re.search(rf"workspace {log.ws.id}: {SIZE + 3} leaves, {SIZE + 3} events match", output)
    assert output.rstrip().endswith("verify: OK")
    held = await log.hold()
    assert await log.replayed_root(held.tree_size) == held.root
    assert await consistent_with(log, held)


async def test_a_changed_payload_byte_is_named_by_verify(log: Log) -> None:
    held = await log.hold()
    victim = (await log.in_ingest_order())[10]
    payload: str = victim["payload"]
    at = payload.index("Lovelace")
    forged = payload[:at] + "M" + payload[at + 1 :]  # one byte: still JSON, still JCS
    async with superuser(log.url) as su:
        await su.execute("UPDATE audit_events SET payload = $1 WHERE id = $2", forged, victim["id"])

    code, output = await log.verify()
    assert code == 1, output
    assert named(output, f"event {victim['id']} (leaf 10)", "no longer matches its leaf hash")
    assert not await inclusion_against(log, str(victim["id"]), held)
    assert await log.replayed_root(held.tree_size) != held.root


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda p: p[:-1] + "]", id="not JSON"),
        pytest.param(
            lambda p: p.replace('"n":7', '"n":9007199254740993'), id="a number JCS cannot carry"
        ),
    ],
)
async def test_a_payload_that_is_no_longer_canonical_json_is_named_by_verify(
    log: Log, forge: Callable[[str], str]
) -> None:
    victim = (await log.in_ingest_order())[11]  # the event of metadata {"n": 7}
    forged = forge(victim["payload"])
    assert forged != victim["payload"]
    async with superuser(log.url) as su:
        await su.execute("UPDATE audit_events SET payload = $1 WHERE id = $2", forged, victim["id"])

    code, output = await log.verify()
    assert code == 1, output
    assert named(output, f"event {victim['id']} (leaf 11)", "no longer matches"), output
    assert "Traceback" not in output


async def test_deleted_newest_events_are_named_by_verify(log: Log) -> None:
    assert await log.ingest_and_seal(5) == SIZE + 5
    held = await log.hold()
    newest = (await log.in_ingest_order())[-3:]
    async with superuser(log.url) as su:
        await su.execute(
            "DELETE FROM audit_events WHERE workspace_id = $1 AND id = ANY($2::uuid[])",
            log.ws.id,
            [r["id"] for r in newest],
        )
        await su.execute(
            "DELETE FROM audit_event_ids WHERE workspace_id = $1 AND id = ANY($2::uuid[])",
            log.ws.id,
            [r["id"] for r in newest],
        )
    # The service carries on: new events are sealed after the old leaves.
    assert await log.ingest_and_seal(4) == SIZE + 9

    code, output = await log.verify()
    assert code == 1, output
    for k, row in enumerate(newest):
        assert named(output, f"event {row['id']} (leaf {SIZE + 2 + k}) is missing from the log")
    # The held checkpoint: the log's events no longer give its root, and the
    # events it covered are gone from the service.
    assert await log.replayed_root(held.tree_size) != held.root
    for row in newest:
        assert not await inclusion_against(log, str(row["id"]), held)


async def _cut_tail(su: asyncpg.Connection, workspace_id: str, keep: int) -> list[uuid.UUID]:
    """Delete every event of leaf `keep` onwards and their leaf runs (and ids); which went."""
    rows = await su.fetch(
        """SELECT id FROM audit_events WHERE workspace_id = $1 ORDER BY xid, seq OFFSET $2""",
        workspace_id,
        keep,
    )
    ids = [r["id"] for r in rows]
    await su.execute(
        "DELETE FROM audit_events WHERE workspace_id = $1 AND id = ANY($2::uuid[])",
        workspace_id,
        ids,
    )
    await su.execute(
        "DELETE FROM audit_event_ids WHERE workspace_id = $1 AND id = ANY($2::uuid[])",
        workspace_id,
        ids,
    )
    runs = await su.fetch(
        "DELETE FROM integrity_leaves WHERE workspace_id = $1 AND start_index >= $2"
        " RETURNING start_index",
        workspace_id,
        keep,
    )
    assert runs, "the tail was sealed in runs of its own"
    return ids


async def test_a_tail_rewritten_under_its_old_checkpoints_is_named_by_verify(log: Log) -> None:
    assert await log.ingest_and_seal(5) == SIZE + 5
    held = await log.hold()
    async with superuser(log.url) as su:
        gone = await _cut_tail(su, log.ws.id, SIZE)
    assert len(gone) == 5
    # Different events take the removed leaves' places when the service seals again.
    assert await log.ingest_and_seal(7, forged=True) == SIZE + 7

    code, output = await log.verify()
    assert code == 1, output
    assert named(
        output,
        f"checkpoint of tree size {SIZE + 5}",
        "no longer matches the stored tree",
        f"leaves {SIZE} to {SIZE + 4} changed",
    ), output
    assert not await consistent_with(log, held)
    assert await log.replayed_root(held.tree_size) != held.root


async def test_a_tail_rewritten_with_its_checkpoints_fails_against_a_held_checkpoint(
    log: Log,
) -> None:
    assert await log.ingest_and_seal(5) == SIZE + 5
    held = await log.hold()
    async with superuser(log.url) as su:
        await _cut_tail(su, log.ws.id, SIZE)
        await su.execute(
            "DELETE FROM integrity_checkpoints WHERE workspace_id = $1 AND tree_size > $2",
            log.ws.id,
            SIZE,
        )
    # Sealed 5 at a time, the service signs the held size again, over other events.
    assert await log.ingest_and_seal(7, batch=5, forged=True) == SIZE + 7

    # The service signed the rewritten tree, so the database agrees with itself:
    # as docs/integrity.md's threat model says, only a checkpoint held from before
    # shows this rewrite. `verify --database` cannot, and says the log verifies.
    code, output = await log.verify()
    assert code == 0, output
    assert not await consistent_with(log, held)
    assert await log.replayed_root(held.tree_size) != held.root
    # The service's own checkpoint of the held size is a different, newly signed one.
    data = await gql_data(
        log.ws,
        "query($n: Int!) { integrity { checkpoint(treeSize: $n) { signedNote } } }",
        {"n": held.tree_size},
    )
    resigned = v.open_checkpoint(data["integrity"]["checkpoint"]["signedNote"], log.key)
    assert resigned.tree_size == held.tree_size and resigned.root != held.root


async def test_an_event_inserted_before_the_sealed_frontier_is_named_by_verify(log: Log) -> None:
    held = await log.hold()
    model = (await log.in_ingest_order())[2]  # a key event, alone in its transaction
    inserted = uuid.uuid4()
    async with superuser(log.url) as su:
        # A copy of leaf 2's event under a new id, placed in ingest order right after
        # it (its transaction's xid, a fresh sequence number), so before leaf 3.
        await su.execute(
            """INSERT INTO audit_events (workspace_id, occurred_at, xid, id, received_at, action,
                   category, actor_type, actor_id, actor_email, ip, target_ids, payload)
               SELECT workspace_id, occurred_at, xid, $2, received_at, action, category,
                   actor_type, actor_id, actor_email, ip, target_ids, replace(payload, $3, $4)
               FROM audit_events WHERE workspace_id = $1 AND id = $5""",
            log.ws.id,
            inserted,
            str(model["id"]),
            str(inserted),
            model["id"],
        )
    order = [r["id"] for r in await log.in_ingest_order()]
    assert order.index(inserted) == 3
    await log.ingest_and_seal(2)  # sealing carries on past it

    code, output = await log.verify()
    assert code == 1, output
    assert named(output, f"event {inserted} is not in the tree although events after it are")
    assert await log.replayed_root(held.tree_size) != held.root
    assert not await inclusion_against(log, str(inserted), held)


SWAPS = {
    "payloads": "SET payload = o.payload",
    "positions": "SET xid = o.xid, seq = o.seq",
    "ingest order": "SET xid = o.xid",  # the same sequence numbers, the transactions swapped
}


@pytest.mark.parametrize("swap", list(SWAPS))
async def test_two_swapped_events_are_named_by_verify(log: Log, swap: str) -> None:
    held = await log.hold()
    rows = await log.in_ingest_order()
    a, b = rows[2], rows[15]  # a key event and an ingested one: different transactions
    assert a["xid"] != b["xid"]
    async with superuser(log.url) as su:
        await su.execute(
            f"""UPDATE audit_events AS e {SWAPS[swap]} FROM audit_events AS o
                WHERE e.workspace_id = $1 AND o.workspace_id = $1
                  AND ((e.id = $2 AND o.id = $3) OR (e.id = $3 AND o.id = $2))""",
            log.ws.id,
            a["id"],
            b["id"],
        )

    code, output = await log.verify()
    assert code == 1, output
    expected = {
        "payloads": f"event {a['id']} (leaf 2): its stored payload no longer matches",
        "positions": f"leaf 2 was event {a['id']}, now event {b['id']} sits there",
        "ingest order": "is out of ingest order",
    }[swap]
    assert expected in output, output
    assert await log.replayed_root(held.tree_size) != held.root
    if swap != "ingest order":
        # The tree still says which event was where: neither proves itself any more.
        assert not await inclusion_against(log, str(a["id"]), held)
        assert not await inclusion_against(log, str(b["id"]), held)
