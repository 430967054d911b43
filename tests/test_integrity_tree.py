"""The stored tree against a naive RFC 9162 tree built in the test from stored payloads."""

from __future__ import annotations

import hashlib
import random

import asyncpg
import httpx
import pytest

from auditlog.integrity import merkle
from auditlog.integrity.notes import NoteSigner, VerifierKey, open_checkpoint
from auditlog.runtime import Services
from auditlog.services import integrity as svc
from tests.conftest import WorkspaceKeys, create_workspace_keys, event


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return _h(b"\x00" + leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _h(b"\x01" + naive_root(leaves[:k]) + naive_root(leaves[k:]))


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n <= 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_root(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_root(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [naive_root(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, leaves[:k], complete), naive_root(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_root(leaves[:k])]


def test_pure_proofs_match_the_naive_tree() -> None:
    rng = random.Random(7)
    for n in [1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 300, 511, 512, 513, 1000]:
        leaves = [rng.randbytes(20) for _ in range(n)]
        hashes = [merkle.leaf_hash(x) for x in leaves]

        def subtree(start: int, height: int, hashes: list[bytes] = hashes) -> bytes:
            return merkle.perfect_root(hashes[start : start + (1 << height)])

        root = merkle.range_hash(0, n, subtree)
        assert root == naive_root(leaves)
        for m in {0, n - 1, rng.randrange(n)}:
            proof = [merkle.range_hash(a, b, subtree) for a, b in merkle.inclusion_ranges(m, n)]
            assert proof == naive_path(m, leaves)
            assert merkle.verify_inclusion(hashes[m], m, n, proof, root)
            assert not merkle.verify_inclusion(hashes[m], m, n, proof, _h(b"x"))
        for old in {1, n, rng.randrange(1, n + 1)}:
            proof = [merkle.range_hash(a, b, subtree) for a, b in merkle.consistency_ranges(old, n)]
            assert proof == naive_subproof(old, leaves, True)
            old_root = naive_root(leaves[:old])
            assert merkle.verify_consistency(old, n, old_root, root, proof)
            if old < n:
                assert not merkle.verify_consistency(old, n, _h(b"x"), root, proof)


def test_signed_checkpoint_round_trip_and_bit_flips() -> None:
    signer = NoteSigner("auditlog.test", bytes(range(32)))
    body = "auditlog.test/acme\n5\n" + "A" * 43 + "=\n"
    note = signer.sign(body)
    key = VerifierKey.parse(signer.verifier.encode())
    cp = open_checkpoint(note, [key])
    assert (cp.origin, cp.size) == ("auditlog.test/acme", 5)
    raw = bytearray(note.encode())
    for i in range(0, len(raw), 7):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        try:
            text = flipped.decode()
        except UnicodeDecodeError:
            continue
        with pytest.raises(ValueError):
            open_checkpoint(text, [key])


async def test_sealed_tree_matches_stored_payloads(
    services: Services, workspace: WorkspaceKeys, owner: object
) -> None:
    signer = NoteSigner("auditlog.test", bytes(32))
    payloads: list[bytes] = []
    sizes: list[int] = []
    rng = random.Random(3)
    for batch in [1, 2, 1, 5, 120, 130, 3, 250, 10]:
        r = await workspace.ingest([event(metadata={"n": i}) for i in range(batch)])
        assert r.status_code == 202, r.text
        async with services.pool.acquire() as conn:
            total = await conn.fetchval(
                "SELECT count(*) FROM audit_events WHERE workspace_id = $1", workspace.id
            )
            results = await svc.seal_until_caught_up(conn, workspace.id, signer, batch=200)
        assert results and results[-1].checkpoint.tree_size == total
        sizes.extend(x.checkpoint.tree_size for x in results)
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT payload FROM audit_events WHERE workspace_id = $1 ORDER BY xid, seq",
            workspace.id,
        )
        payloads = [r["payload"].encode() for r in rows]
        assert len(payloads) == total
        for size in sizes:
            cp = await svc.signed_checkpoint(conn, workspace.id, size, "treeSize")
            assert cp is not None
            assert cp.root_hash == naive_root(payloads[:size])
            opened = open_checkpoint(cp.signed_note, [signer.verifier])
            assert opened.root == cp.root_hash and opened.size == size
        for _ in range(40):
            size = rng.choice(sizes)
            m = rng.randrange(size)
            proof = await svc.inclusion_proof(conn, workspace.id, m, size)
            assert proof == naive_path(m, payloads[:size])
        for _ in range(40):
            a, b = sorted(rng.sample(sizes, 2))
            proof = await svc.consistency_proof(conn, workspace.id, a, b)
            assert proof == naive_subproof(a, payloads[:b], True)


async def test_a_workspace_that_fails_to_seal_does_not_stop_the_others(
    services: Services, http: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    """A damaged tree (here: a checkpoint already stored at the size the next seal
    signs) fails that workspace's seal only; the pass seals every other workspace."""
    signer = services.signing_keys.current()
    broken = await create_workspace_keys(services, http)
    fine = await create_workspace_keys(services, http)
    async with services.pool.acquire() as conn:
        await svc.seal_until_caught_up(conn, broken.id, signer)
        await svc.seal_until_caught_up(conn, fine.id, signer)
    await broken.ingest([event()])
    await fine.ingest([event()])
    next_size = 5  # 4 key events and the new one
    await owner.execute(
        """INSERT INTO integrity_checkpoints
               (workspace_id, tree_size, root_hash, signed_note, verifier_key)
           VALUES ($1, $2, $3, 'x', 'x')""",
        broken.id,
        next_size,
        bytes(32),
    )
    async with services.pool.acquire() as conn:
        done = await svc.seal_all(conn, signer)
        assert broken.id in done.failed
        assert fine.id not in done.failed
        fine_latest = await svc.signed_checkpoint(conn, fine.id, None, "treeSize")
    assert fine_latest is not None and fine_latest.tree_size == 5
