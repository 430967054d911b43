"""The notification bus: broadcaster over Redis, or in-process without REDIS_URL.

A message on `workspace:<id>` says only "this workspace has new events". It is
a doorbell: subscribers read the events themselves from PostgreSQL, so a lost
message delays them until their next poll and loses nothing.

A message on `auditlog:api-key-revoked` (the key id) says "a key was revoked":
each process re-checks its open websockets' keys against the database at once,
instead of at its next periodic re-check.
"""

from __future__ import annotations

from broadcaster import Broadcast

REVOCATIONS_CHANNEL = "auditlog:api-key-revoked"


def channel_for(workspace_id: str) -> str:
    return f"workspace:{workspace_id}"


class LiveBus:
    def __init__(self, redis_url: str | None) -> None:
        self.url = redis_url or "memory://"
        self.broadcast = Broadcast(self.url)

    async def connect(self) -> None:
        await self.broadcast.connect()

    async def disconnect(self) -> None:
        await self.broadcast.disconnect()

    async def notify(self, workspace_ids: set[str]) -> None:
        for workspace_id in sorted(workspace_ids):
            await self.broadcast.publish(channel=channel_for(workspace_id), message="new")

    async def announce_revoked(self, key_id: str) -> None:
        await self.broadcast.publish(channel=REVOCATIONS_CHANNEL, message=key_id)
