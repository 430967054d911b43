"""Integrity over GraphQL and HTTP: checkpoints, proofs, refusals, tenant isolation."""

from __future__ import annotations

import base64

import httpx

from auditlog.integrity import merkle
from auditlog.integrity.notes import VerifierKey, open_checkpoint
from auditlog.runtime import Services
from auditlog.services import integrity as svc
from tests.conftest import WorkspaceKeys, create_workspace_keys, event

PROOF_QUERY = """query($n: Int) {
  integrity { origin verifierKey verifierKeys latest { treeSize rootHash signedNote sealedAt } }
  auditEvents(first: 50) { edges { node {
    id payload leafIndex
    inclusionProof(treeSize: $n) { leafIndex treeSize hashes checkpoint { treeSize rootHash } }
  } } }
}"""


async def _seal(services: Services, workspace_id: str) -> None:
    async with services.pool.acquire() as conn:
        await svc.seal_until_caught_up(conn, workspace_id, services.signing_keys.current())


async def test_every_event_proves_its_inclusion(
    services: Services, workspace: WorkspaceKeys
) -> None:
    r = await workspace.ingest([event(metadata={"i": i, "x": "é\u2028"}) for i in range(37)])
    assert r.status_code == 202
    body = await workspace.gql(PROOF_QUERY, {"n": None})
    assert body["data"]["integrity"]["latest"] is None
    assert all(e["node"]["leafIndex"] is None for e in body["data"]["auditEvents"]["edges"])
    await _seal(services, workspace.id)
    body = await workspace.gql(PROOF_QUERY, {"n": None})
    assert "errors" not in body, body
    integrity = body["data"]["integrity"]
    assert integrity["origin"] == f"auditlog.local/{workspace.id}"
    key = VerifierKey.parse(integrity["verifierKey"])
    assert integrity["verifierKeys"][0] == integrity["verifierKey"]
    cp = open_checkpoint(integrity["latest"]["signedNote"], [key])
    assert cp.size == integrity["latest"]["treeSize"] == 41  # 4 key events + 37
    edges = body["data"]["auditEvents"]["edges"]
    indexes = sorted(e["node"]["leafIndex"] for e in edges)
    assert indexes == list(range(41))
    for edge in edges:
        node = edge["node"]
        proof = node["inclusionProof"]
        assert proof["leafIndex"] == node["leafIndex"]
        leaf = merkle.leaf_hash(_jcs(node["payload"]))
        hashes = [base64.b64decode(h) for h in proof["hashes"]]
        assert merkle.verify_inclusion(leaf, proof["leafIndex"], cp.size, hashes, cp.root)


def _jcs(payload: object) -> bytes:
    import rfc8785

    return rfc8785.dumps(payload)


async def test_bad_sizes_are_refused_naming_the_argument(
    services: Services, workspace: WorkspaceKeys
) -> None:
    await workspace.ingest([event() for _ in range(3)])
    await _seal(services, workspace.id)
    cases = [
        ("{ integrity { consistencyProof(fromSize: 5, toSize: 2) } }", "fromSize"),
        ("{ integrity { consistencyProof(fromSize: 0, toSize: 2) } }", "fromSize"),
        ("{ integrity { consistencyProof(fromSize: 1, toSize: 99) } }", "toSize"),
        ("{ integrity { checkpoint(treeSize: -1) { treeSize } } }", "treeSize"),
        ("{ integrity { checkpoints(first: 100000) { treeSize } } }", "first"),
        (
            "{ auditEvents(first: 1) { edges { node {"
            " inclusionProof(treeSize: 3) { treeSize } } } } }",
            "treeSize",
        ),
    ]
    for query, argument in cases:
        body = await workspace.gql(query)
        errors = body.get("errors")
        assert errors, (query, body)
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT", (query, errors)
        assert errors[0]["message"].startswith(argument + ":"), (query, errors)


async def test_members_and_other_workspaces_see_nothing(
    services: Services, workspace: WorkspaceKeys, http: httpx.AsyncClient
) -> None:
    other = await create_workspace_keys(services, http)
    await workspace.ingest([event()])
    await _seal(services, workspace.id)
    await _seal(services, other.id)
    body = await workspace.gql("{ integrity { latest { treeSize } } }", key=workspace.member)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    mine = await workspace.gql("{ integrity { origin latest { treeSize } } }")
    theirs = await other.gql("{ integrity { origin latest { treeSize } } }")
    assert mine["data"]["integrity"]["origin"].endswith(workspace.id)
    assert theirs["data"]["integrity"]["origin"].endswith(other.id)
    assert theirs["data"]["integrity"]["latest"]["treeSize"] == 4  # its own key events only


async def test_verifier_keys_are_public_one_a_line(
    services: Services, http: httpx.AsyncClient
) -> None:
    r = await http.get("/v1/integrity/verifier-keys")
    assert r.status_code == 200
    lines = r.text.splitlines()
    assert lines[0] == services.signing_keys.current().verifier.encode()
    for line in lines:
        VerifierKey.parse(line)


async def test_a_consistency_proof_from_a_size_never_signed(
    services: Services, workspace: WorkspaceKeys, owner: object
) -> None:
    """The older root may be one the verifier computed from events it holds."""
    await workspace.ingest([event() for _ in range(9)])
    await _seal(services, workspace.id)
    body = await workspace.gql("{ integrity { latest { treeSize rootHash } } }")
    latest = body["data"]["integrity"]["latest"]
    query = "query($n: Int!) { integrity { consistencyProof(fromSize: 3, toSize: $n) } }"
    body = await workspace.gql(query, {"n": latest["treeSize"]})
    assert "errors" not in body, body
    proof = [base64.b64decode(h) for h in body["data"]["integrity"]["consistencyProof"]]
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT payload FROM audit_events WHERE workspace_id = $1 ORDER BY xid, seq LIMIT 3",
            workspace.id,
        )
    leaves = [merkle.leaf_hash(r["payload"].encode()) for r in rows]
    old_root = merkle.range_hash(0, 3, lambda s, h: merkle.perfect_root(leaves[s : s + (1 << h)]))
    new_root = base64.b64decode(latest["rootHash"])
    assert merkle.verify_consistency(3, latest["treeSize"], old_root, new_root, proof)
