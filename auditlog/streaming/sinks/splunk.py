"""SPLUNK_HEC: concatenated event objects POSTed to {url}/services/collector/event.

A checkpoint is one more object in the same envelope, with sourcetype
`auditlog:checkpoint` whatever the destination's own sourcetype is.

With indexer acknowledgement (`useAck`), every request names the destination's
channel, and a send returns only once HEC's ack endpoint says the batch's ackId
is indexed; an ackId still unacknowledged after the ack timeout raises a
retryable SinkError, so delivery sends the batch again (at least once).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass

import orjson

from auditlog.streaming.netguard import GuardedClient
from auditlog.streaming.sinks.base import (
    HOSTNAME,
    OutCheckpoint,
    OutEvent,
    Sink,
    SinkError,
    SinkTarget,
    post_batch,
    post_judged,
)

CHECKPOINT_SOURCETYPE = "auditlog:checkpoint"
MAX_BODY = 1_000_000  # Splunk's default max_content_length is larger; 1 MB keeps every HEC happy
CHANNEL_HEADER = "X-Splunk-Request-Channel"
# Channels are derived from the destination id in this namespace: every worker, and
# every restart, uses the same one, so HEC holds one channel per destination.
CHANNEL_NAMESPACE = uuid.UUID("6f1d3c2a-5b7e-4f0a-9c3d-2e8b1a4f7c60")
ACK_POLL_FIRST = 0.2
ACK_POLL_GROWTH = 1.5
ACK_POLL_MAX = 2.0
ACK_POLL_REFUSED = "indexer acknowledgement poll"
# HEC error codes of a 400 that no single event causes: incorrect index, data channel
# missing or invalid, acknowledgement disabled.
DESTINATION_CODES = frozenset({7, 10, 11, 14})


def channel_of(destination_id: uuid.UUID) -> str:
    return str(uuid.uuid5(CHANNEL_NAMESPACE, str(destination_id)))


@dataclass(frozen=True)
class IndexerAck:
    """Indexer acknowledgement: the channel every request names, how long to wait for it."""

    channel: str
    timeout: float


class SplunkHecSink(Sink):
    max_events = 5000
    max_bytes = MAX_BODY

    def __init__(
        self,
        target: SinkTarget,
        client: GuardedClient,
        url: str,
        token: str,
        index: str | None,
        sourcetype: str | None,
        ack: IndexerAck | None = None,
    ) -> None:
        self.client = client
        base = url.rstrip("/")
        self.url = base + "/services/collector/event"
        self.token = token
        self.envelope: dict[str, object] = {
            "host": HOSTNAME,
            "source": "auditlog",
            "sourcetype": sourcetype or "auditlog:event",
        }
        if index:
            self.envelope["index"] = index
        self.ack = ack
        self.ack_url = base + "/services/collector/ack"
        if ack is not None:
            self.ack_url += f"?channel={ack.channel}"
            # The wait, and one last poll started just before its end.
            self.confirm_seconds = ack.timeout + client.timeout

    def encode(self, event: OutEvent) -> bytes:
        head = orjson.dumps({"time": round(event.occurred_at.timestamp(), 6), **self.envelope})
        return head[:-1] + b',"event":' + event.payload.encode() + b"}"

    def encode_checkpoint(self, checkpoint: OutCheckpoint) -> bytes:
        return orjson.dumps(
            {
                "time": round(checkpoint.sealed_at.timestamp(), 6),
                **self.envelope,
                "sourcetype": CHECKPOINT_SOURCETYPE,
                "event": checkpoint.fields(),
            }
        )

    async def send(self, entries: list[bytes], events: list[OutEvent]) -> int | None:
        return await self._post(entries)

    async def send_checkpoint(self, entry: bytes, checkpoint: OutCheckpoint) -> int | None:
        return await self._post([entry])

    async def _post(self, entries: list[bytes]) -> int:
        headers = {"Authorization": f"Splunk {self.token}", "Content-Type": "application/json"}
        if self.ack is None:
            return await post_batch(self.client, self.url, b"".join(entries), headers)
        headers[CHANNEL_HEADER] = self.ack.channel
        answer = await post_judged(self.client, self.url, b"".join(entries), headers)
        await self._wait_for_ack(_ack_id(answer.text), headers, self.ack)
        return answer.status_code

    async def _wait_for_ack(self, ack_id: int, headers: dict[str, str], ack: IndexerAck) -> None:
        """Poll the channel's ack status until `ack_id` is indexed; a retryable SinkError
        once the ack timeout passed without it (the batch may be lost: send it again)."""
        deadline = time.monotonic() + ack.timeout
        interval = ACK_POLL_FIRST
        body = orjson.dumps({"acks": [ack_id]})
        last_error = ""
        while True:
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            try:
                answer = await post_judged(self.client, self.ack_url, body, headers)
            except SinkError as exc:
                if not exc.retryable:  # e.g. 400 "ACK is disabled": no poll will succeed
                    raise SinkError(
                        f"{ACK_POLL_REFUSED}: {exc}",
                        retryable=False,
                        status_code=exc.status_code,
                    ) from None
                last_error = f"; last poll: {exc}"  # a poll lost on the way is tried again
            else:
                if _acknowledged(answer.text, ack_id):
                    return
            if time.monotonic() >= deadline:
                raise SinkError(
                    f"no indexer acknowledgement of ackId {ack_id} within {ack.timeout:g}s"
                    f"{last_error}; the batch is sent again",
                    retryable=True,
                )
            interval = min(interval * ACK_POLL_GROWTH, ACK_POLL_MAX)

    def refuses_event(self, error: SinkError) -> bool:
        """HEC answers 400 for a bad index or channel and a disabled acknowledgement too:
        those codes, and an acknowledgement poll's refusal, are the destination's."""
        if str(error).startswith(ACK_POLL_REFUSED):
            return False
        code = re.search(r'"code":\s*(\d+)', str(error))
        if code is not None and int(code.group(1)) in DESTINATION_CODES:
            return False
        return super().refuses_event(error)

    def secret_values(self) -> list[str]:
        return [self.token]

    async def aclose(self) -> None:
        await self.client.aclose()


def _ack_id(text: str) -> int:
    """The ackId of an accepted request; none means the token has acknowledgement off."""
    try:
        ack_id = orjson.loads(text).get("ackId")
    except (orjson.JSONDecodeError, AttributeError):
        ack_id = None
    if not isinstance(ack_id, int) or isinstance(ack_id, bool) or ack_id < 0:
        raise SinkError(
            "HEC accepted the batch without an ackId: indexer acknowledgement is off for "
            "this token (enable it on the token, or set useAck to false)",
            retryable=False,
        )
    return ack_id


def _acknowledged(text: str, ack_id: int) -> bool:
    """Whether an ack status answer ({"acks": {"<id>": true|false}}) says `ack_id` is indexed;
    an id HEC does not know (expired, lost) is not."""
    try:
        acks = orjson.loads(text).get("acks")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return isinstance(acks, dict) and acks.get(str(ack_id)) is True
