"""Console sessions signed with asymmetric keys published at AUDITLOG_JWKS_URL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from auditlog.services import keys as key_service
from auditlog.services import workspaces as workspace_service
from tests.conftest import (
    JWT_SECRET,
    RunningService,
    make_settings,
    serve_asgi,
    start_service,
    stop_service,
)

PRIVATE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
async def jwks_url() -> AsyncIterator[str]:
    jwk = json.loads(RSAAlgorithm.to_jwk(PRIVATE_KEY.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})

    async def keys(_: object) -> JSONResponse:
        return JSONResponse({"keys": [jwk]})

    async with serve_asgi(Starlette(routes=[Route("/jwks.json", keys)])) as base:
        yield f"{base}/jwks.json"


@pytest.fixture(scope="module")
async def jwks_service(
    database_url: str, data_dir: Path, jwks_url: str
) -> AsyncIterator[RunningService]:
    running = await start_service(make_settings(database_url, data_dir, jwks_url=jwks_url))
    yield running
    await stop_service(running)


def _claims(workspace: str, **extra: object) -> dict[str, object]:
    return {
        "sub": "u_9",
        "workspace": workspace,
        "role": "admin",
        "exp": int(time.time()) + 60,
        **extra,
    }


async def test_rs256_session_from_jwks(jwks_service: RunningService) -> None:
    services = jwks_service.services
    await workspace_service.create_workspace(services.pool, "jwks-acme", "enterprise")
    query = {"query": "{ workspace { id } }"}
    good = jwt.encode(_claims("jwks-acme"), PRIVATE_KEY, algorithm="RS256", headers={"kid": "k1"})
    forged = jwt.encode(_claims("jwks-acme"), OTHER_KEY, algorithm="RS256", headers={"kid": "k1"})
    # An HS256 token signed with the public key's text must never pass as RS256.
    async with httpx.AsyncClient(base_url=jwks_service.base_url) as http:
        ok = await http.post("/graphql", json=query, headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 200
        assert ok.json()["data"]["workspace"]["id"] == "jwks-acme"
        bad = await http.post("/graphql", json=query, headers={"Authorization": f"Bearer {forged}"})
        assert bad.status_code == 401
        hs = jwt.encode(_claims("jwks-acme"), JWT_SECRET, algorithm="HS256")
        hs_response = await http.post(
            "/graphql", json=query, headers={"Authorization": f"Bearer {hs}"}
        )
        assert hs_response.status_code == 200  # the HS256 secret is configured too
        expired = jwt.encode(
            _claims("jwks-acme", exp=int(time.time()) - 10),
            PRIVATE_KEY,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        late = await http.post(
            "/graphql", json=query, headers={"Authorization": f"Bearer {expired}"}
        )
        assert late.status_code == 401


async def test_a_slow_identity_provider_cannot_hold_the_pool(
    database_url: str, data_dir: Path
) -> None:
    """Tokens whose key must be fetched from a JWKS endpoint that answers in 3 s:
    while a dozen of them wait (more than the pool's 10 connections), a request
    with an API key is still answered at once, because no pooled connection is
    held while a signature is checked."""
    jwk = json.loads(RSAAlgorithm.to_jwk(PRIVATE_KEY.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})

    async def slow_keys(_: object) -> JSONResponse:
        await asyncio.sleep(3)
        return JSONResponse({"keys": [jwk]})

    app = Starlette(routes=[Route("/jwks.json", slow_keys)])
    async with serve_asgi(app) as base:
        settings = make_settings(database_url, data_dir, jwks_url=f"{base}/jwks.json")
        running = await start_service(settings)
        try:
            services = running.services
            await workspace_service.create_workspace(services.pool, "jwks-slow", "enterprise")
            key = await key_service.create_key(
                services.pool, services.ingestor, workspace_id="jwks-slow", role="admin"
            )
            query = {"query": "{ workspace { id } }"}
            # An unknown kid makes every request fetch the key set again.
            token = jwt.encode(
                _claims("jwks-slow"), PRIVATE_KEY, algorithm="RS256", headers={"kid": "k-new"}
            )
            async with httpx.AsyncClient(base_url=running.base_url, timeout=60) as http:
                waiting = [
                    asyncio.create_task(
                        http.post(
                            "/graphql", json=query, headers={"Authorization": f"Bearer {token}"}
                        )
                    )
                    for _ in range(12)
                ]
                await asyncio.sleep(0.5)
                started = time.monotonic()
                quick = await http.post(
                    "/graphql", json=query, headers={"Authorization": f"Bearer {key.key}"}
                )
                elapsed = time.monotonic() - started
                slow = await asyncio.gather(*waiting)
            assert quick.status_code == 200
            assert quick.json()["data"]["workspace"]["id"] == "jwks-slow"
            assert elapsed < 1.5, elapsed
            assert all(r.status_code == 401 for r in slow)
        finally:
            await stop_service(running)
