"""DATADOG: logs intake v2, a gzip JSON array of log entries per request.

A checkpoint is one entry whose message is the signed note, tagged `kind:checkpoint`.
"""

from __future__ import annotations

import gzip

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


def intake_url(site: str) -> str:
    return f"https://http-intake.logs.{site}/api/v2/logs"


class DatadogSink(Sink):
    max_events = 1000  # Datadog: at most 1,000 entries
    max_bytes = 5_000_000  # and 5 MB uncompressed a request

    def __init__(
        self,
        target: SinkTarget,
        client: GuardedClient,
        *,
        url: str,
        api_key: str,
        service: str | None,
        tags: list[str] | None,
    ) -> None:
        self.client = client
        self.url = url
        self.api_key = api_key
        self.fields = {
            "ddsource": "auditlog",
            "service": service or "auditlog",
            "ddtags": ",".join([*(tags or []), f"workspace:{target.workspace_id}"]),
            "hostname": HOSTNAME,
        }

    def encode(self, event: OutEvent) -> bytes:
        return orjson.dumps({**self.fields, "message": event.payload})

    def encode_checkpoint(self, checkpoint: OutCheckpoint) -> bytes:
        tags = f"{self.fields['ddtags']},kind:checkpoint"
        return orjson.dumps({**self.fields, "ddtags": tags, "message": checkpoint.signed_note})

    async def send(self, entries: list[bytes], events: list[OutEvent]) -> int | None:
        return await self._post(entries)

    async def send_checkpoint(self, entry: bytes, checkpoint: OutCheckpoint) -> int | None:
        return await self._post([entry])

    async def _post(self, entries: list[bytes]) -> int:
        body = gzip.compress(b"[" + b",".join(entries) + b"]", compresslevel=5)
        headers = {
            "DD-API-KEY": self.api_key,
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        return await post_batch(self.client, self.url, body, headers)

    def secret_values(self) -> list[str]:
        return [self.api_key]

    async def aclose(self) -> None:
        await self.client.aclose()
