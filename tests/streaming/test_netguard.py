"""The guarded client connects to the checked address but verifies TLS against the name."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from auditlog.streaming.netguard import GuardedClient, NetworkPolicy
from tests.conftest import free_port
from tests.streaming.receivers import wait_until


def self_signed_for_localhost(folder: Path) -> tuple[Path, Path]:
    """A certificate for the name `localhost` only (no IP address in it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[int, Path, list[str]]]:
    hosts: list[str] = []

    async def echo_host(request: Request) -> PlainTextResponse:
        hosts.append(request.headers["host"])
        return PlainTextResponse("ok")

    cert, key = self_signed_for_localhost(tmp_path)
    port = free_port()
    app = Starlette(routes=[Route("/", echo_host, methods=["POST"])])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started)
    yield port, cert, hosts
    server.should_exit = True
    await task


async def test_tls_is_verified_against_the_name_while_connecting_to_the_checked_address(
    tls_server: tuple[int, Path, list[str]],
) -> None:
    port, cert, hosts = tls_server
    trust = ssl.create_default_context(cafile=str(cert))
    client = GuardedClient(NetworkPolicy(allow_private=True), timeout=5, verify=trust)
    try:
        answer = await client.post(f"https://localhost:{port}/", b"{}", {})
        assert answer.status_code == 200
        assert hosts == [f"localhost:{port}"]
        # The certificate names localhost, not 127.0.0.1: had the name been lost on the
        # way to the address, this is what would have happened to every request.
        with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED"):
            await client.post(f"https://127.0.0.1:{port}/", b"{}", {})
    finally:
        await client.aclose()
