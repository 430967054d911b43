"""WEBHOOK: {"type": "audit_log.events", "data": [...]} signed the Standard Webhooks way,
and {"type": "audit_log.checkpoint", "data": {"treeSize", "rootHash", "signedNote"}}.

webhook-signature is `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`
keyed with the base64-decoded part of the `whsec_` secret. The message id is
derived from the batch's first and last positions (a checkpoint's: its tree
size), so a retried batch keeps its id and consumers can dedupe it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson

from auditlog.streaming.netguard import GuardedClient
from auditlog.streaming.sinks.base import OutCheckpoint, OutEvent, Sink, SinkTarget, post_batch

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

    def encode_checkpoint(self, checkpoint: OutCheckpoint) -> bytes:
        return orjson.dumps(checkpoint.fields())

    def _message_id(self, seed: str) -> str:
        digest = hashlib.sha256(f"{self.target.destination_id}:{seed}".encode())
        return "msg_" + digest.hexdigest()[:32]

    async def send(self, entries: list[bytes], events: list[OutEvent]) -> int | None:
        first, last = events[0], events[-1]
        message_id = self._message_id(f"{first.xid}:{first.seq}:{last.xid}:{last.seq}")
        body = b'{"type":"audit_log.events","data":[' + b",".join(entries) + b"]}"
        return await self._post(message_id, body)

    async def send_checkpoint(self, entry: bytes, checkpoint: OutCheckpoint) -> int | None:
        message_id = self._message_id(f"checkpoint:{checkpoint.tree_size}")
        body = b'{"type":"audit_log.checkpoint","data":' + entry + b"}"
        return await self._post(message_id, body)

    async def _post(self, message_id: str, body: bytes) -> int:
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
