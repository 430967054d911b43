"""SPLUNK_HEC: concatenated event objects POSTed to {url}/services/collector/event.

A checkpoint is one more object in the same envelope, with sourcetype
`auditlog:checkpoint` whatever the destination's own sourcetype is.
"""

from __future__ import annotations

import orjson

from auditlog.streaming.netguard import GuardedClient
from auditlog.streaming.sinks.base import (
    HOSTNAME,
    OutCheckpoint,
    OutEvent,
    Sink,
    SinkTarget,
    post_batch,
)

CHECKPOINT_SOURCETYPE = "auditlog:checkpoint"
MAX_BODY = 1_000_000  # Splunk's default max_content_length is larger; 1 MB keeps every HEC happy


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
    ) -> None:
        self.client = client
        self.url = url.rstrip("/") + "/services/collector/event"
        self.token = token
        self.envelope: dict[str, object] = {
            "host": HOSTNAME,
            "source": "auditlog",
            "sourcetype": sourcetype or "auditlog:event",
        }
        if index:
            self.envelope["index"] = index

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
        return await post_batch(self.client, self.url, b"".join(entries), headers)

    def secret_values(self) -> list[str]:
        return [self.token]

    async def aclose(self) -> None:
        await self.client.aclose()
