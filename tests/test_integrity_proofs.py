"""Proofs as a verifier outside the service sees them: through GraphQL only, checked
by the independent verifier (tests/integrity_verifier.py). One workspace grows to
300 leaves with a checkpoint at many sizes, on and around powers of two."""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from auditlog.runtime import Services
from auditlog.services import integrity as svc
from tests import integrity_verifier as v
from tests.conftest import RunningService, WorkspaceKeys, create_workspace_keys, event
from tests.integrity_support import checkpoints, events, gql_data, integrity_keys

# Sizes signed on purpose: 1 to 10, then each side of every power of two to 256.
TARGETS = sorted(
    {*range(1, 11), 15, 16, 17, 31, 32, 33, 50, 63, 64, 65, 100, 127, 128, 129, 170, 200}
    | {254, 255, 256, 257, 258, 280, 299, 300}
)
# Events ingested before each round of sealing (the workspace's 4 key events come first).
BATCHES = [20, 41, 62, 73, 57, 43]
TOTAL = 4 + sum(BATCHES)
ALIASES = 20  # the most one GraphQL query may use


@dataclass
class Grown:
    ws: WorkspaceKeys
    key: str  # the verifier key, as GraphQL lists it
    origin: str
    leaves: list[dict[str, Any]]  # events by leaf index
    checkpoints: list[dict[str, Any]]  # smallest first
    roots: dict[int, bytes]  # tree size -> root, from the signed notes
    signed: list[int]  # every size the fixture sealed, in order


@pytest.fixture(scope="module")
async def grown(services: Services, service: RunningService) -> AsyncIterator[Grown]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
        ws = await create_workspace_keys(services, http)
        signer = services.signing_keys.current()
        size, available, signed = 0, 4, []
        async with services.pool.acquire() as conn:
            for batch in [0, *BATCHES]:
                if batch:
                    payload = [event(metadata={"n": available + i}) for i in range(batch)]
                    assert (await ws.ingest(payload)).status_code == 202
                    available += batch
                # Land on each target this batch reached, then on whatever it ended at.
                for target in [t for t in TARGETS if size < t <= available] + [available]:
                    if target > size:
                        sealed = await svc.seal_workspace(conn, ws.id, signer, batch=target - size)
                        assert sealed is not None and sealed.checkpoint.tree_size == target
                        size = target
                        signed.append(size)
        assert size == TOTAL == TARGETS[-1]
        origin, key, _ = await integrity_keys(ws)
        shown = await events(ws)
        leaves = sorted(shown, key=lambda e: int(e["leafIndex"]))
        cps = await checkpoints(ws)
        roots = {int(c["treeSize"]): v.open_checkpoint(c["signedNote"], key).root for c in cps}
        yield Grown(ws, key, origin, leaves, cps, roots, signed)


def test_the_verifier_itself_follows_rfc_9162_on_small_trees() -> None:
    # The verifier checks the service; this checks the verifier, on every proof of
    # every tree up to 40 leaves, built by the RFC's own recursive definitions.
    rng = random.Random(9162)
    for n in range(1, 41):
        hashes = [v.leaf_hash(rng.randbytes(8)) for _ in range(n)]
        root = v.root_of_leaf_hashes(hashes)
        for m in range(n):
            path = v.inclusion_path(m, hashes)
            assert v.verify_inclusion(hashes[m], m, n, path, root)
            assert not v.verify_inclusion(hashes[m], m, n, path, v.sha256(root))
            assert not v.verify_inclusion(v.leaf_hash(b"other"), m, n, path, root)
            if n > 1:
                assert not v.verify_inclusion(
                    hashes[m], m ^ 1 if m ^ 1 < n else m - 1, n, path, root
                )
                assert not v.verify_inclusion(hashes[m], m, n, path[:-1], root)
        for m in range(1, n + 1):
            old = v.root_of_leaf_hashes(hashes[:m])
            proof = v.consistency_path(m, hashes)
            assert v.verify_consistency(m, n, old, root, proof)
            if m < n:
                assert not v.verify_consistency(m, n, root, root, proof)
                assert not v.verify_consistency(m, n, old, old, proof)
                assert not v.verify_consistency(m, n, old, root, [*proof, root])
                assert not v.verify_consistency(m, n, old, root, proof[:-1])


def test_every_event_is_one_leaf_and_every_checkpoint_signs_the_root_of_the_events_before_it(
    grown: Grown,
) -> None:
    assert [e["leafIndex"] for e in grown.leaves] == list(range(TOTAL))
    assert len({e["id"] for e in grown.leaves}) == TOTAL
    assert [int(c["treeSize"]) for c in grown.checkpoints] == grown.signed
    assert set(TARGETS) <= set(grown.signed)
    assert grown.origin.endswith("/" + grown.ws.id)
    payloads = [e["payload"] for e in grown.leaves]
    for cp in grown.checkpoints:
        opened = v.open_checkpoint(cp["signedNote"], grown.key)
        assert (opened.origin, opened.tree_size) == (grown.origin, cp["treeSize"])
        assert base64.b64encode(opened.root).decode() == cp["rootHash"]
        assert opened.root == v.root_of_payloads(payloads[: opened.tree_size]), cp["treeSize"]


async def test_random_events_prove_their_inclusion_in_random_checkpoints(grown: Grown) -> None:
    rng = random.Random(1)
    sizes = sorted(grown.roots)
    pairs = [(0, s) for s in sizes] + [(s - 1, s) for s in sizes]
    while len(pairs) < 260:
        size = rng.choice(sizes)
        pairs.append((rng.randrange(size), size))
    for chunk in range(0, len(pairs), ALIASES):
        part = pairs[chunk : chunk + ALIASES]
        fields = "\n".join(
            f'e{k}: auditEvent(id: "{grown.leaves[i]["id"]}") {{ leafIndex payload'
            f" inclusionProof(treeSize: {size}) {{ leafIndex treeSize hashes"
            f" checkpoint {{ treeSize signedNote }} }} }}"
            for k, (i, size) in enumerate(part)
        )
        data = await gql_data(grown.ws, "{ " + fields + " }")
        for k, (i, size) in enumerate(part):
            node = data[f"e{k}"]
            proof = node["inclusionProof"]
            assert (node["leafIndex"], proof["leafIndex"], proof["treeSize"]) == (i, i, size)
            cp = v.open_checkpoint(proof["checkpoint"]["signedNote"], grown.key)
            assert cp.tree_size == size and cp.root == grown.roots[size]
            leaf = v.event_leaf(node["payload"])
            hashes = v.b64decode_all(proof["hashes"])
            assert v.verify_inclusion(leaf, i, size, hashes, cp.root), (i, size)
            # The same proof proves nothing about another event or another position.
            other = grown.leaves[(i + 1) % TOTAL]["payload"]
            assert not v.verify_inclusion(v.event_leaf(other), i, size, hashes, cp.root)
            if size > 1:
                assert not v.verify_inclusion(leaf, (i + 1) % size, size, hashes, cp.root)


async def test_random_checkpoint_pairs_are_consistent(grown: Grown) -> None:
    rng = random.Random(2)
    sizes = sorted(grown.roots)
    pairs = {(a, b) for a in sizes for b in sizes if a <= b and (b - a <= 2 or a == 1)}
    pairs |= {(min(a, b), max(a, b)) for a, b in (rng.sample(sizes, 2) for _ in range(150))}
    ordered = sorted(pairs)
    for chunk in range(0, len(ordered), ALIASES):
        part = ordered[chunk : chunk + ALIASES]
        fields = " ".join(
            f"c{k}: consistencyProof(fromSize: {a}, toSize: {b})" for k, (a, b) in enumerate(part)
        )
        data = await gql_data(grown.ws, "{ integrity { " + fields + " } }")
        for k, (a, b) in enumerate(part):
            proof = v.b64decode_all(data["integrity"][f"c{k}"])
            old, new = grown.roots[a], grown.roots[b]
            assert v.verify_consistency(a, b, old, new, proof), (a, b)
            if a < b:
                assert not v.verify_consistency(a, b, new, new, proof), (a, b)
                assert not v.verify_consistency(a, b, old, old, proof), (a, b)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


async def test_checkpoints_verify_with_the_listed_key_and_any_flipped_bit_breaks_them(
    grown: Grown, http: httpx.AsyncClient
) -> None:
    listed = (await http.get("/v1/integrity/verifier-keys")).text.splitlines()
    assert listed[0] == grown.key
    _, current, keys = await integrity_keys(grown.ws)
    assert current == grown.key and keys[0] == grown.key
    for cp in (grown.checkpoints[0], grown.checkpoints[len(grown.checkpoints) // 2]):
        note = cp["signedNote"].encode()
        assert v.opens(note, grown.key)
        body, _, line = note.rstrip(b"\n").rpartition(b"\n")
        prefix, _, blob = line.rpartition(b" ")
        signature = base64.b64decode(blob)
        assert len(signature) == 4 + 64
        # Every bit of the key hash and the signature...
        for bit in range(len(signature) * 8):
            forged = body + b"\n" + prefix + b" " + base64.b64encode(_flip(signature, bit)) + b"\n"
            assert not v.opens(forged, grown.key), bit
        # ...and every bit of the whole note as text.
        for bit in range(len(note) * 8):
            assert not v.opens(_flip(note, bit), grown.key), bit
    # Another key with the same name verifies nothing.
    name = grown.key.split("+")[0]
    stranger = f"{name}+{_stranger_key(name)}"
    assert not v.opens(grown.checkpoints[-1]["signedNote"].encode(), stranger)


def _stranger_key(name: str) -> str:
    """`<hash>+<key>` of a fresh Ed25519 key under `name`."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    raw = b"\x01" + public
    khash = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex()
    return f"{khash}+{base64.b64encode(raw).decode()}"
