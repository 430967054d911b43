"""The network guard: which addresses count as public, the guarded client connecting to the
checked address (TLS verified against the name), S3 pinned the same way, no environment proxies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
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

from auditlog.streaming.config import S3Config, WebhookConfig, new_webhook_secret
from auditlog.streaming.netguard import GuardedClient, NetworkPolicy, is_public_address
from auditlog.streaming.sinks import build_sink
from auditlog.streaming.sinks.base import OutEvent, Sink, SinkError, SinkTarget
from auditlog.streaming.sinks.s3 import S3Sink, object_key
from tests.conftest import free_port
from tests.streaming.receivers import Receiver, wait_until

TARGET = SinkTarget(workspace_id="ws_netguard", destination_id=uuid.uuid4())
EVENTS = [OutEvent(xid=1, seq=7, occurred_at=dt.datetime.now(dt.UTC), payload='{"id":"e7"}')]
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy")

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


@dataclass
class Recorder:
    """A TCP server on 127.0.0.1 that records who connects, then hangs up."""

    port: int = 0
    peers: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    recorded = Recorder()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        recorded.peers.append(str(writer.get_extra_info("peername")[0]))
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    recorded.port = int(server.sockets[0].getsockname()[1])
    yield recorded
    server.close()
    await server.wait_closed()


@dataclass
class RebindingDns:
    """A DNS that answers `first` to the first lookup and `then` to every later one."""

    first: str
    then: str
    lookups: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return [self.first if len(self.lookups) == 1 else self.then]


def s3_config(endpoint: str, bucket: str = "netguard") -> S3Config:
    return S3Config(
        bucket=bucket,
        region="eu-west-1",
        access_key_id="testing",
        secret_access_key="testing",
        endpoint_url=endpoint,
    )


def moto_bucket(endpoint: str, bucket: str) -> Any:
    """A bucket on the moto server, and a client to read it (its proxies fixed now)."""
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return s3


def proxies_everywhere(monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


async def send_once(sink: Sink) -> int | None:
    try:
        return await sink.send([sink.encode(e) for e in EVENTS], EVENTS)
    finally:
        await sink.aclose()


async def test_s3_endpoint_rebound_to_a_private_address_after_the_check_is_refused(
    recorder: Recorder,
) -> None:
    # Public when checked, loopback (where the recorder listens) when connecting.
    dns = RebindingDns(first="8.8.8.8", then="127.0.0.1")
    policy = NetworkPolicy(allow_private=False, lookup=dns)
    sink = S3Sink(TARGET, s3_config(f"https://localhost:{recorder.port}"), policy, timeout=5)
    with pytest.raises(SinkError) as refused:
        await send_once(sink)
    assert recorder.peers == [], "the request reached the private address"
    assert (
        str(refused.value)
        == "refused: localhost resolves to 127.0.0.1, a private or internal address"
    )
    assert not refused.value.retryable
    assert len(dns.lookups) >= 2  # checked, then looked up again (and refused) to connect


async def test_s3_connects_to_the_address_the_guard_looked_up(s3_endpoint: str) -> None:
    """A name only the guard's DNS knows: the connection can only use the address it checked."""
    s3 = moto_bucket(s3_endpoint, "pinned")
    port = s3_endpoint.rsplit(":", 1)[1]

    async def guard_dns(host: str, port: int) -> list[str]:
        assert host == "guard-only-name"
        return ["127.0.0.1"]

    policy = NetworkPolicy(allow_private=True, lookup=guard_dns)
    sink = S3Sink(TARGET, s3_config(f"http://guard-only-name:{port}", "pinned"), policy, timeout=5)
    assert await send_once(sink) == 200
    key = object_key(None, TARGET.workspace_id, EVENTS)
    assert s3.get_object(Bucket="pinned", Key=key)["ContentEncoding"] == "gzip"


async def test_s3_ignores_proxies_from_the_environment(
    s3_endpoint: str, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = moto_bucket(s3_endpoint, "no-proxy")  # before the proxy variables are set
    proxies_everywhere(monkeypatch, recorder.url)
    endpoint = s3_endpoint.replace("127.0.0.1", "localhost")
    sink = S3Sink(TARGET, s3_config(endpoint, "no-proxy"), NetworkPolicy(True), timeout=5)
    assert await send_once(sink) == 200
    assert recorder.peers == [], "S3 went through the proxy from the environment"
    listed = s3.list_objects_v2(Bucket="no-proxy")["Contents"]
    assert [o["Key"] for o in listed] == [object_key(None, TARGET.workspace_id, EVENTS)]


async def test_webhook_ignores_proxies_from_the_environment(
    receiver: Receiver, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxies_everywhere(monkeypatch, recorder.url)
    config = WebhookConfig(url=f"{receiver.url}/hook", secret=new_webhook_secret())
    sink = build_sink(TARGET, config, NetworkPolicy(allow_private=True), timeout=5)
    assert await send_once(sink) == 200
    assert recorder.peers == [], "the webhook went through the proxy from the environment"
    assert [r.path for r in receiver.requests] == ["/hook"]


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
