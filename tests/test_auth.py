"""Keys, roles and sessions: who may ingest, who may read, and 401 for the rest."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import asyncpg
import jwt
import pytest

from auditlog.runtime import Services
from auditlog.services import keys as key_service
from tests.conftest import JWT_SECRET, WorkspaceKeys, create_workspace_keys, event

READ = "{ workspace { id plan } }"


async def test_missing_bad_and_revoked_tokens_are_401(
    workspace: WorkspaceKeys, services: Services
) -> None:
    http = workspace.http
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        assert (await http.post("/v1/events", json=[event()], headers=headers)).status_code == 401
        assert (
            await http.post("/graphql", json={"query": READ}, headers=headers)
        ).status_code == 401
    forged = workspace.admin[:-4] + "AAAA"
    assert (
        await http.post("/graphql", json={"query": READ}, headers=workspace.auth(forged))
    ).status_code == 401
    created = await key_service.create_key(
        services.pool, services.ingestor, workspace_id=workspace.id, role="admin"
    )
    assert (await workspace.gql(READ, key=created.key))["data"]["workspace"]["id"] == workspace.id
    await key_service.revoke_key(services.pool, services.ingestor, created.id, bus=services.bus)
    revoked = await http.post("/graphql", json={"query": READ}, headers=workspace.auth(created.key))
    assert revoked.status_code == 401


async def test_only_ingest_keys_ingest(workspace: WorkspaceKeys) -> None:
    for key in (workspace.admin, workspace.owner, workspace.member):
        response = await workspace.ingest([event()], key=key)
        assert response.status_code == 403, response.text


async def test_member_cannot_read(workspace: WorkspaceKeys) -> None:
    body = await workspace.gql("{ auditEvents { edges { cursor } } }", key=workspace.member)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await workspace.gql("{ auditEvents { edges { cursor } } }", key=workspace.ingest_key)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_workspace_key_cannot_write_into_another_workspace(
    workspace: WorkspaceKeys, services: Services
) -> None:
    other = await create_workspace_keys(services, workspace.http)
    response = await workspace.ingest([event(workspaceId=other.id)])
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "workspaceId"
    body = await other.gql("{ auditEvents { edges { node { id } } } }")
    assert all(e["node"]["id"] for e in body["data"]["auditEvents"]["edges"])
    assert not [
        e
        for e in body["data"]["auditEvents"]["edges"]
        if e["node"]["id"] == response.json().get("ids", [None])[0]
    ]


async def test_platform_key_writes_to_named_workspaces(
    workspace: WorkspaceKeys, services: Services
) -> None:
    platform = await key_service.create_key(
        services.pool, services.ingestor, workspace_id=None, role="ingest"
    )
    missing = await workspace.ingest([event()], key=platform.key)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "workspaceId"
    unknown = await workspace.ingest([event(workspaceId="no-such-ws")], key=platform.key)
    assert unknown.status_code == 422
    ok = await workspace.ingest(
        [event("user.2fa.enabled", workspaceId=workspace.id)], key=platform.key
    )
    assert ok.status_code == 202
    found = await workspace.gql(
        '{ auditEvents(filter: {actions: ["user.2fa.enabled"]}) { edges { node { id } } } }'
    )
    assert [e["node"]["id"] for e in found["data"]["auditEvents"]["edges"]] == ok.json()["ids"]


def _token(**claims: object) -> str:
    base = {"sub": "u_7", "email": "ops@acme.io", "exp": int(time.time()) + 600}
    base.update(claims)
    return jwt.encode(base, JWT_SECRET, algorithm="HS256")


async def test_console_jwt_sessions(workspace: WorkspaceKeys) -> None:
    http = workspace.http
    good = _token(workspace=workspace.id, role="admin")
    assert (await workspace.gql(READ, key=good))["data"]["workspace"]["id"] == workspace.id
    # An identity provider's audience claim does not make the token invalid here.
    with_audience = _token(workspace=workspace.id, role="admin", aud="console.aibams.example")
    body = await workspace.gql(READ, key=with_audience)
    assert body["data"]["workspace"]["id"] == workspace.id
    expired = _token(workspace=workspace.id, role="admin", exp=int(time.time()) - 5)
    no_exp = jwt.encode(
        {"sub": "u", "workspace": workspace.id, "role": "admin"}, JWT_SECRET, algorithm="HS256"
    )
    wrong_key = jwt.encode(
        {"sub": "u", "workspace": workspace.id, "role": "admin", "exp": int(time.time()) + 60},
        "another-secret-" + "0123456789abcdef" * 4,
        algorithm="HS256",
    )
    unsigned = jwt.encode(
        {"sub": "u", "workspace": workspace.id, "role": "admin", "exp": int(time.time()) + 60},
        None,
        algorithm="none",
    )
    hs512 = jwt.encode(
        {"sub": "u", "workspace": workspace.id, "role": "admin", "exp": int(time.time()) + 60},
        JWT_SECRET,
        algorithm="HS512",
    )
    for token in (expired, no_exp, wrong_key, unsigned, hs512):
        response = await http.post("/graphql", json={"query": READ}, headers=workspace.auth(token))
        assert response.status_code == 401, token
    member = _token(workspace=workspace.id, role="member")
    body = await workspace.gql("{ auditEvents { edges { cursor } } }", key=member)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_key_creation_and_revocation_are_audited(
    workspace: WorkspaceKeys, services: Services
) -> None:
    created = await key_service.create_key(
        services.pool, services.ingestor, workspace_id=workspace.id, role="member", name="ci"
    )
    await key_service.revoke_key(services.pool, services.ingestor, created.id, bus=services.bus)
    body = await workspace.gql(
        '{ auditEvents(filter: {actions: ["audit_log.api_key.*"]}, first: 50) '
        "{ edges { node { action targets { id } metadata } } } }"
    )
    seen = [
        (e["node"]["action"], e["node"]["targets"][0]["id"])
        for e in body["data"]["auditEvents"]["edges"]
    ]
    assert ("audit_log.api_key.revoked", created.id) in seen
    assert ("audit_log.api_key.created", created.id) in seen
    assert created.key not in str(body)


async def test_a_key_is_not_created_or_revoked_without_its_audit_event(
    workspace: WorkspaceKeys, services: Services, database_url: str
) -> None:
    """The key and its audit_log.api_key.* event commit together: when the event
    cannot be written (here the database refuses it, by a trigger the test puts
    on the idempotency ledger for this workspace), no key is created and no
    revocation sticks."""
    created = await key_service.create_key(
        services.pool, services.ingestor, workspace_id=workspace.id, role="admin", name="keep"
    )
    owner = await asyncpg.connect(database_url)
    try:
        await owner.execute(
            f"""CREATE FUNCTION test_refuse_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.workspace_id = '{workspace.id}' THEN
                        RAISE EXCEPTION 'the test refuses this event';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER test_refuse_ledger BEFORE INSERT ON audit_event_ids
                    FOR EACH ROW EXECUTE FUNCTION test_refuse_ledger();"""
        )
        before = await owner.fetchval(
            "SELECT count(*) FROM api_keys WHERE workspace_id = $1", workspace.id
        )
        with pytest.raises(asyncpg.RaiseError):
            await key_service.create_key(
                services.pool, services.ingestor, workspace_id=workspace.id, role="admin"
            )
        with pytest.raises(asyncpg.RaiseError):
            await key_service.revoke_key(
                services.pool, services.ingestor, created.id, bus=services.bus
            )
        after = await owner.fetchval(
            "SELECT count(*) FROM api_keys WHERE workspace_id = $1", workspace.id
        )
        revoked_at = await owner.fetchval(
            "SELECT revoked_at FROM api_keys WHERE id = $1", created.id
        )
    finally:
        await owner.execute(
            "DROP TRIGGER IF EXISTS test_refuse_ledger ON audit_event_ids;"
            "DROP FUNCTION IF EXISTS test_refuse_ledger();"
        )
        await owner.close()
    assert after == before
    assert revoked_at is None
    response = await workspace.http.post(
        "/graphql",
        json={"query": "{ workspace { id } }"},
        headers={"Authorization": f"Bearer {created.key}"},
    )
    assert response.status_code == 200


async def test_oversized_graphql_request_is_refused(workspace: WorkspaceKeys) -> None:
    query = "{ workspace { id } }" + " " * 300_000
    response = await workspace.http.post(
        "/graphql", json={"query": query}, headers=workspace.auth(workspace.admin)
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"


async def test_chunked_oversized_graphql_request_is_refused(workspace: WorkspaceKeys) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "{ workspace { id } }", "pad": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}'

    response = await workspace.http.post(
        "/graphql",
        content=chunks(),
        headers={**workspace.auth(workspace.admin), "content-type": "application/json"},
    )
    assert response.status_code == 413


async def test_a_get_with_a_query_needs_a_token_even_from_a_browser(
    workspace: WorkspaceKeys,
) -> None:
    response = await workspace.http.get(
        "/graphql", params={"query": "{ eventCatalog { action } }"}, headers={"accept": "text/html"}
    )
    assert response.status_code == 401
    ide = await workspace.http.get("/graphql", headers={"accept": "text/html"})
    assert ide.status_code == 200 and "<html" in ide.text.lower()
