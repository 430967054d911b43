"""WEBHOOK: {"type": "audit_log.events", "data": [...]} signed the Standard Webhooks way.

webhook-signature is `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`
keyed with the base64-decoded part of the `whsec_` secret. The message id is
derived from the batch's first and last positions, so a retried batch keeps
its id and consumers can dedupe it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from auditlog.streaming.netguard import GuardedClient
from auditlog.streaming.sinks.base import OutEvent, Sink, SinkTarget, post_batch

MAX_BODY = 1_000_000


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookSink(Sink):
    max_events = 1000
    max_bytes = MAX_BODY - 64

    def __init__(self, target: SinkTarget, client: GuardedClient, url: str, secret: str) -> None:
        self.target = target
        self.client = client
        self.url = url
        self.secret = secret

    def encode(self, event: OutEvent) -> bytes:
        return event.payload.encode()

    def _message_id(self, events: list[OutEvent]) -> str:
        first, last = events[0], events[-1]
        seed = f"{self.target.destination_id}:{first.xid}:{first.seq}:{last.xid}:{last.seq}"
        return "msg_" + hashlib.sha256(seed.encode()).hexdigest()[:32]

    async def send(self, entries: list[bytes], events: list[OutEvent]) -> int | None:
        body = b'{"type":"audit_log.events","data":[' + b",".join(entries) + b"]}"
        message_id = self._message_id(events)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.secret, message_id, timestamp, body),
        }
        return await post_batch(self.client, self.url, body, headers)

    def secret_values(self) -> list[str]:
        return [self.secret]

    async def aclose(self) -> None:
        await self.client.aclose()
