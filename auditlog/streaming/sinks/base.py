"""What every sink provides to the shared delivery loop, and how HTTP answers are judged.

A sink only knows its wire format: how one event is encoded (`encode`), how
many events and bytes one request may carry, and how to send a batch of
encoded entries; likewise how a signed checkpoint is encoded and sent.
Batching, retries, backoff and both cursors are delivery.py's.
"""

from __future__ import annotations

import base64
import email.utils
import socket
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from auditlog.streaming.netguard import Answer, DestinationRefused, GuardedClient

HOSTNAME = socket.gethostname()
# Statuses that can refuse one request's content for good; every other 4xx
# (401, 403, 404, ...) is about the destination as a whole.
EVENT_REFUSALS = frozenset({400, 413, 422})
USER_AGENT = "auditlog-stream/1"


@dataclass(frozen=True, slots=True)
class OutEvent:
    """One stored event on its way out: its position and canonical JSON text."""

    xid: int
    seq: int
    occurred_at: datetime
    payload: str


@dataclass(frozen=True, slots=True)
class OutCheckpoint:
    """One signed checkpoint of the workspace's tree on its way out."""

    tree_size: int
    root_hash: bytes
    signed_note: str
    sealed_at: datetime

    def fields(self) -> dict[str, object]:
        """The checkpoint as the JSON wire formats carry it."""
        return {
            "treeSize": self.tree_size,
            "rootHash": base64.b64encode(self.root_hash).decode(),
            "signedNote": self.signed_note,
        }


@dataclass(frozen=True)
class SinkTarget:
    workspace_id: str
    destination_id: uuid.UUID


class SinkError(Exception):
    """A batch was not acknowledged. `retryable`: try the same batch again later."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code
        self.retry_after = retry_after


class Sink(ABC):
    max_events: int
    max_bytes: int
    # Seconds a send may take beyond its request, waiting for the destination to
    # confirm what it answered (Splunk's indexer acknowledgement); delivery allows it.
    confirm_seconds: float = 0.0

    @abstractmethod
    def encode(self, event: OutEvent) -> bytes:
        """One event as this sink's entry on the wire."""

    @abstractmethod
    async def send(self, entries: list[bytes], events: list[OutEvent]) -> int | None:
        """Deliver one batch; return the status code, or raise SinkError."""

    @abstractmethod
    def encode_checkpoint(self, checkpoint: OutCheckpoint) -> bytes:
        """One checkpoint as this sink's entry on the wire."""

    @abstractmethod
    async def send_checkpoint(self, entry: bytes, checkpoint: OutCheckpoint) -> int | None:
        """Deliver one encoded checkpoint; return the status code, or raise SinkError."""

    @abstractmethod
    def secret_values(self) -> list[str]:
        """Credentials this sink holds: scrubbed from every error and log line."""

    def refuses_event(self, error: SinkError) -> bool:
        """Whether a permanent refusal may be about what the request carried (one event
        too large or malformed for the receiver) rather than the destination itself:
        delivery then splits the batch to find the refused events (docs/streaming.md)."""
        return not error.retryable and error.status_code in EVENT_REFUSALS

    async def aclose(self) -> None:
        return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def judge_status(status: int, headers: httpx.Headers | dict[str, str], body: str) -> None:
    """Raise SinkError unless the status acknowledges the batch."""
    if 200 <= status < 300:
        return
    detail = " ".join(body[:4000].split())  # cut after credentials are scrubbed (delivery.scrub)
    message = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status in (408, 425, 429) or status >= 500:
        retry_after = parse_retry_after(headers.get("retry-after"))
        raise SinkError(message, retryable=True, status_code=status, retry_after=retry_after)
    if 300 <= status < 400:
        message = f"HTTP {status}: redirects are not followed"
    raise SinkError(message, retryable=False, status_code=status)


async def post_batch(client: GuardedClient, url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST a batch through the guarded client; judge the answer."""
    return (await post_judged(client, url, body, headers)).status_code


async def post_judged(
    client: GuardedClient, url: str, body: bytes, headers: dict[str, str]
) -> Answer:
    """POST through the guarded client; the answer once judged an acknowledgement."""
    try:
        response = await client.post(url, body, {"User-Agent": USER_AGENT, **headers})
    except DestinationRefused as exc:
        raise SinkError(f"refused: {exc}", retryable=False) from None
    except httpx.TimeoutException:
        raise SinkError("timed out", retryable=True) from None
    except (httpx.HTTPError, OSError) as exc:
        raise SinkError(f"network error: {type(exc).__name__}: {exc}", retryable=True) from None
    judge_status(response.status_code, response.headers, response.text)
    return response
