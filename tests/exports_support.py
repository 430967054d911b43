"""Helpers shared by the export tests: create an export, download a file."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import socket
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.conftest import WorkspaceKeys

EXPORT_FIELDS = (
    "id format filter status rowCount createdAt expiresAt proofUrl files { part rowCount url }"
)
CREATE = f"""mutation ($input: CreateExportInput!) {{
  createExport(input: $input) {{ {EXPORT_FIELDS} }}
}}"""
ONE = f"query ($id: ID!) {{ export(id: $id) {{ {EXPORT_FIELDS} }} }}"
LIST = "query ($first: Int, $after: ID) { exports(first: $first, after: $after) { id } }"


async def create_export(
    ws: WorkspaceKeys, file_format: str, flt: dict[str, Any] | None, key: str | None = None
) -> dict[str, Any]:
    body = await ws.gql(CREATE, {"input": {"format": file_format, "filter": flt}}, key)
    assert "errors" not in body, body
    export: dict[str, Any] = body["data"]["createExport"]
    return export


async def download(http: httpx.AsyncClient, url: str) -> httpx.Response:
    """A plain GET of a signed link, with no Authorization header."""
    response = await http.get(url)
    assert response.status_code == 200, response.text
    return response


def csv_rows(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode(), newline="")))


# A receive buffer this small keeps the TCP window small: a client that stops
# reading soon blocks the server's writes (the kernel gives at least its minimum).
STALLED_RECEIVE_BUFFER = 4096


@dataclass
class StalledClient:
    """A raw HTTP client that starts a download, reads its first bytes and stops reading."""

    sock: socket.socket
    head: bytes  # status line and headers
    body: bytes  # what it read of the body before it stopped

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    async def read_to_end(self) -> bytes:
        """Read again, up to the server closing the connection: the rest of the (chunked) body."""
        loop = asyncio.get_running_loop()
        data = bytearray(self.body)
        while True:
            try:
                chunk = await loop.sock_recv(self.sock, 65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def close(self) -> None:
        # An abortive close (RST): the server sees the client gone at once.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


async def open_stalled(url: str, *, first_bytes_wait: float = 3.0) -> StalledClient:
    """GET `url` on a socket with a tiny receive buffer; read the headers and, when they
    come within `first_bytes_wait`, the first body bytes; then read no more."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RECEIVE_BUFFER)  # before connect
    sock.setblocking(False)
    await loop.sock_connect(sock, (parts.hostname, parts.port))
    request = f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    data = b""
    async with asyncio.timeout(10):
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(sock, 4096)
            assert chunk, "the server closed the connection before its headers"
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not body:  # a download waiting for a slot sends no body yet
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(first_bytes_wait):
                body = await loop.sock_recv(sock, 4096)
    return StalledClient(sock, head, body)
