"""Console sessions signed with asymmetric keys published at AUDITLOG_JWKS_URL."""

from __future__ import annotations

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

from auditlog import accounts
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
    await accounts.create_workspace(services.pool, "jwks-acme", "enterprise")
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
