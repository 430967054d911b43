"""SPLUNK_HEC: concatenated event objects POSTed to {url}/services/collector/event."""

from __future__ import annotations

import orjson

from auditlog.streaming.netguard import GuardedClient
from auditlog.streaming.sinks.base import HOSTNAME, OutEvent, Sink, SinkTarget, post_batch

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

    async def send(self, entries: list[bytes], events: list[OutEvent]) -> int | None:
        headers = {"Authorization": f"Splunk {self.token}", "Content-Type": "application/json"}
        return await post_batch(self.client, self.url, b"".join(entries), headers)

    def secret_values(self) -> list[str]:
        return [self.token]

    async def aclose(self) -> None:
        await self.client.aclose()
