"""The network guard: which addresses count as public, and the guarded client connecting to
the checked address (TLS verified against the name).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
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

from auditlog.streaming.netguard import GuardedClient, NetworkPolicy, is_public_address
from tests.conftest import free_port
from tests.streaming.receivers import wait_until

# (address, public?): the forms that carry another address are judged by what they carry.
ADDRESSES = [
    ("8.8.8.8", True),
    ("2001:4860:4860::8888", True),
    ("0.0.0.0", False),
    ("0.1.2.3", False),  # 0.0.0.0/8: "this network", reaches the host itself on Linux
    ("10.0.0.1", False),
    ("100.64.0.1", False),  # CGNAT
    ("127.0.0.1", False),
    ("169.254.169.254", False),  # cloud metadata
    ("172.16.0.1", False),
    ("192.0.0.9", False),  # IETF protocol assignments, anycast services: never a sink
    ("192.0.2.1", False),
    ("192.88.99.1", False),  # deprecated 6to4 relay anycast
    ("192.168.1.1", False),
    ("198.18.0.1", False),
    ("224.0.0.1", False),
    ("239.255.255.250", False),
    ("240.0.0.1", False),
    ("255.255.255.255", False),
    ("::", False),
    ("::1", False),
    ("::ffff:10.0.0.1", False),  # IPv4-mapped: the socket connects to 10.0.0.1
    ("::ffff:127.0.0.1", False),
    ("::ffff:8.8.8.8", True),
    ("::ffff:0:a00:1", False),  # IPv4-translated (SIIT)
    ("::10.0.0.1", False),  # IPv4-compatible, deprecated
    ("::8.8.8.8", False),  # ... refused whatever it carries: no destination uses it
    ("64:ff9b::a00:1", False),  # NAT64 to 10.0.0.1
    ("64:ff9b::7f00:1", False),  # NAT64 to 127.0.0.1
    ("64:ff9b::a9fe:a9fe", False),  # NAT64 to 169.254.169.254
    ("64:ff9b::808:808", True),  # NAT64 to 8.8.8.8, as DNS64 answers on IPv6-only hosts
    ("64:ff9b:1::808:808", False),  # local-use NAT64: the operator's own translator
    ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
    ("2002:7f00:1::1", False),
    ("2002:808:808::1", True),
    ("2001::1", False),  # Teredo
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
    ("2001:db8::1", False),
    ("3fff::1", False),  # documentation (RFC 9637)
    ("5f00::1", False),  # SRv6 SIDs
    ("100::1", False),  # discard-only
    ("fc00::1", False),
    ("fd00:ec2::254", False),  # AWS's IPv6 metadata address
    ("fe80::1", False),
    ("fec0::1", False),  # site-local, deprecated but still routed inside some networks
    ("feff::1", False),
    ("ff02::1", False),
    ("ff0e::1", False),  # global-scope multicast
    ("4000::1", False),  # outside 2000::/3, not allocated
]


@pytest.mark.parametrize(("address", "public"), ADDRESSES)
def test_which_addresses_are_public(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


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
