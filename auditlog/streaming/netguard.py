"""No internal targets: destinations may only reach public addresses over https.

Checking a name when the destination is created is not enough (DNS can change
between the check and the connection), so every request is resolved here,
each address checked, and the connection made to the checked address itself,
with the original name kept for the Host header and TLS (SNI and certificate
check). The HTTP sinks do it with GuardedClient; S3 (aiobotocore, which makes
its own connections over aiohttp) with GuardedResolver, aiohttp's only source
of addresses. Redirects are never followed. `allow_private` (the setting
AUDITLOG_ALLOW_PRIVATE_DESTINATIONS) lifts both rules for tests and closed networks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from auditlog.errors import BadInputError
from auditlog.model import IPAddress

MAX_URL_LENGTH = 2048


class DestinationRefused(Exception):
    """The destination's address is not one we may connect to."""


# Not public whatever Python's `is_global` says (its tables differ between versions):
# the special-purpose ranges of RFC 6890 and its updates that are not globally
# reachable, plus those no legitimate destination lives in.
_NOT_PUBLIC: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the host itself on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT, the provider's inside
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments (anycast services included)
        "192.0.2.0/24",
        "192.88.99.0/24",  # the deprecated 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/96",  # unspecified, loopback, IPv4-compatible (deprecated: no destination uses it)
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT), the translator's inside
        "64:ff9b:1::/48",  # local-use NAT64: the operator's own translator, any inner address
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 segment identifiers
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local: deprecated, yet still routed inside some networks
        "ff00::/8",  # multicast
    )
)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")  # the only IPv6 space allocated for it
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix, last 32 bits


def is_public_address(ip: IPAddress) -> bool:
    """Whether a destination may be at this address; a form carrying an IPv4 address
    (IPv4-mapped, NAT64, 6to4) is judged by the address it carries, where it ends up."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
        if ip not in _GLOBAL_UNICAST:
            return False
    if any(ip in net for net in _NOT_PUBLIC if net.version == ip.version):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local)


Lookup = Callable[[str, int], Awaitable[list[str]]]


async def system_lookup(host: str, port: int) -> list[str]:
    """The name's addresses from the system resolver, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class NetworkPolicy:
    allow_private: bool
    # Where names are looked up; tests put a DNS of their own here (one that rebinds).
    lookup: Lookup = field(default=system_lookup, compare=False, repr=False)

    def check_url(self, url: str, argument: str) -> httpx.URL:
        """Static checks of a destination URL; BadInputError names the argument."""
        if len(url) > MAX_URL_LENGTH:
            raise BadInputError(argument, f"at most {MAX_URL_LENGTH} characters")
        try:
            parsed = httpx.URL(url.strip())
        except (httpx.InvalidURL, ValueError):
            raise BadInputError(argument, "is not a valid URL") from None
        schemes = ("http", "https") if self.allow_private else ("https",)
        if parsed.scheme not in schemes or not parsed.host:
            raise BadInputError(argument, f"must be an absolute {' or '.join(schemes)} URL")
        if parsed.userinfo:
            raise BadInputError(argument, "must not carry credentials in the URL")
        if not self.allow_private:
            try:
                literal = ipaddress.ip_address(parsed.host)
            except ValueError:
                literal = None
            if literal is not None and not is_public_address(literal):
                raise BadInputError(argument, "must not point to a private or internal address")
        return parsed

    async def check_url_resolves_public(self, url: str, argument: str) -> httpx.URL:
        """check_url, then refuse a name that resolves to an internal address now."""
        parsed = self.check_url(url, argument)
        try:
            await self.resolve(parsed.host, parsed.port or 443)
        except DestinationRefused as exc:
            raise BadInputError(argument, str(exc)) from None
        except OSError:
            pass  # unknown today: delivery reports it, and checks again at every request
        return parsed

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to, in order; every address the name has must be allowed."""
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in await self.lookup(host, port)]
        if not addresses:
            raise OSError(f"{host} has no address")
        if not self.allow_private:
            for address in addresses:
                if not is_public_address(address):
                    raise DestinationRefused(
                        f"{host} resolves to {address}, a private or internal address"
                    )
        return list(dict.fromkeys(str(a) for a in addresses))


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver: a name's addresses as the policy looked them up and checked.

    aiohttp connects only to what this returns (the name stays in Host and TLS), so a
    name rebound to an internal address after an earlier check is refused here, at connect.
    """

    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for address in await self.policy.resolve(host, port):
            found = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family in (socket.AF_INET, socket.AF_INET6) and found != family:
                continue
            flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
            results.append(
                ResolveResult(
                    hostname=host, host=address, port=port, family=found, proto=0, flags=flags
                )
            )
        if not results:
            raise OSError(f"{host} has no address of family {family!r}")
        return results

    async def close(self) -> None:
        return None


def refusal_in(exc: BaseException) -> DestinationRefused | None:
    """The refusal behind an error that a library wrapped around it, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DestinationRefused):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """A destination's answer: status, headers and the start of its body."""

    status_code: int
    headers: httpx.Headers
    text: str


class GuardedClient:
    """An HTTP client that only connects to addresses the policy allows.

    Pooled connections are keyed by address, so each name gets its own pool: a
    connection verified for one name is never reused for another on the same address.
    """

    def __init__(
        self, policy: NetworkPolicy, timeout: float, verify: ssl.SSLContext | bool = True
    ) -> None:
        self.policy = policy
        self._verify = verify
        self._timeout = timeout
        self._clients: dict[str, httpx.AsyncClient] = {}

    @property
    def timeout(self) -> float:
        """The longest one request may take."""
        return self._timeout

    def _client_for(self, host: str) -> httpx.AsyncClient:
        if host not in self._clients:
            self._clients[host] = httpx.AsyncClient(
                verify=self._verify,
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
                follow_redirects=False,
                trust_env=False,  # a proxy from the environment would connect for us, unchecked
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            )
        return self._clients[host]

    async def post(self, url: str, content: bytes, headers: dict[str, str]) -> Answer:
        target = httpx.URL(url)
        if target.scheme != "https" and not self.policy.allow_private:
            raise DestinationRefused("only https destinations are allowed")
        addresses = await self.policy.resolve(target.host, target.port or _default_port(target))
        for address in addresses[:-1]:  # the next one when a name has several
            try:
                return await self._post_to(target, address, content, headers)
            except httpx.ConnectError:
                continue
        return await self._post_to(target, addresses[-1], content, headers)

    async def _post_to(
        self, target: httpx.URL, address: str, content: bytes, headers: dict[str, str]
    ) -> Answer:
        """Connect to the checked address; the name stays in Host and TLS (SNI, certificate).

        Only the first MAX_ANSWER_BYTES of the answer are read (undecoded): a
        destination answering without end cannot fill this process's memory.
        """
        client = self._client_for(target.host)
        request = client.build_request(
            "POST",
            target.copy_with(host=address),
            content=content,
            headers={**headers, "Host": target.netloc.decode("ascii")},
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        )
        response = await client.send(request, stream=True)
        try:
            body = b""
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= MAX_ANSWER_BYTES:
                    break
        finally:
            await response.aclose()
        text = body[:MAX_ANSWER_BYTES].decode("utf-8", errors="replace")
        return Answer(response.status_code, response.headers, text)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
