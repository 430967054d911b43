"""S3: one gzip NDJSON object per batch, under
`<prefix>/workspace=<id>/dt=YYYY-MM-DD/hour=HH/<first seq>-<last seq>.ndjson.gz`.

The date and hour are the first event's occurred_at (UTC); names come from the
batch's first and last seq. A checkpoint is the signed note as text/plain at
`<prefix>/workspace=<id>/checkpoints/<tree size, 20 digits>.checkpoint`
(resending rewrites the same object). A retried batch is cut again from the
cursor and may land under another name, so consumers deduplicate on event ids. With a
custom endpointUrl its address is checked before every request, and aiohttp (under
aiobotocore) gets its addresses only from the guard's resolver, which checks them
again: it connects to what was checked, whatever the name resolves to meanwhile.
"""

from __future__ import annotations

import gzip
from contextlib import AsyncExitStack
from datetime import UTC
from typing import Any

import httpx
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from auditlog.streaming.config import S3Config
from auditlog.streaming.netguard import (
    DestinationRefused,
    GuardedResolver,
    NetworkPolicy,
    refusal_in,
)
from auditlog.streaming.sinks.base import (
    OutCheckpoint,
    OutEvent,
    Sink,
    SinkError,
    SinkTarget,
    judge_status,
)


def _key(prefix: str | None, workspace_id: str, *parts: str) -> str:
    names = [f"workspace={workspace_id}", *parts]
    return "/".join([prefix, *names] if prefix else names)


def object_key(prefix: str | None, workspace_id: str, events: list[OutEvent]) -> str:
    first, last = events[0], events[-1]
    when = first.occurred_at.astimezone(UTC)
    name = f"{first.seq:020d}-{last.seq:020d}.ndjson.gz"
    return _key(prefix, workspace_id, f"dt={when:%Y-%m-%d}", f"hour={when:%H}", name)


def checkpoint_key(prefix: str | None, workspace_id: str, tree_size: int) -> str:
    return _key(prefix, workspace_id, "checkpoints", f"{tree_size:020d}.checkpoint")


class S3Sink(Sink):
    max_events = 10_000
    max_bytes = 32_000_000

    def __init__(
        self, target: SinkTarget, config: S3Config, policy: NetworkPolicy, timeout: float
    ) -> None:
        self.target = target
        self.config = config
        self.policy = policy
        self.timeout = timeout
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def _s3(self) -> Any:
        if self._client is None:
            # Our resolver for a custom endpoint, and no cache of its answers, so each new
            # connection is looked up and checked as it is made. AWS's own names are left
            # to the system: a VPC endpoint rightly makes them resolve to private addresses.
            connector_args: dict[str, Any] = (
                {"resolver": GuardedResolver(self.policy), "use_dns_cache": False}
                if self.config.endpoint_url
                else {}
            )
            session = get_session()
            self._client = await self._stack.enter_async_context(
                session.create_client(
                    "s3",
                    region_name=self.config.region,
                    endpoint_url=self.config.endpoint_url,
                    aws_access_key_id=self.config.access_key_id,
                    aws_secret_access_key=self.config.secret_access_key,
                    config=AioConfig(
                        connector_args=connector_args,
                        # Not None: botocore reads HTTP(S)_PROXY from the environment when it
                        # is, and a proxy would connect for us, unchecked (aiohttp's own
                        # trust_env is off in aiobotocore's session).
                        proxies={},
                        connect_timeout=min(self.timeout, 5.0),
                        read_timeout=self.timeout,
                        # One attempt in all (max_attempts counts retries): delivery retries.
                        retries={"total_max_attempts": 1},
                        # A custom endpoint is addressed exactly as given (MinIO and
                        # most S3-compatible stores need it): the checked name is the
                        # one connected to, never <bucket>.<name>.
                        s3={"addressing_style": "path"} if self.config.endpoint_url else None,
                    ),
                )
            )
        return self._client

    async def _check_endpoint(self) -> None:
        if self.config.endpoint_url is None:
            return  # AWS's own endpoint
        url = httpx.URL(self.config.endpoint_url)
        if url.scheme != "https" and not self.policy.allow_private:
            raise SinkError("refused: only https destinations are allowed", retryable=False)
        try:
            await self.policy.resolve(url.host, url.port or (443 if url.scheme == "https" else 80))
        except DestinationRefused as exc:
            raise SinkError(f"refused: {exc}", retryable=False) from None
        except OSError as exc:
            raise SinkError(f"network error: {exc}", retryable=True) from None

    def encode(self, event: OutEvent) -> bytes:
        return event.payload.encode()

    def encode_checkpoint(self, checkpoint: OutCheckpoint) -> bytes:
        return checkpoint.signed_note.encode()

    async def send(self, entries: list[bytes], events: list[OutEvent]) -> int | None:
        body = gzip.compress(b"\n".join(entries) + b"\n", compresslevel=5)
        key = object_key(self.config.prefix, self.target.workspace_id, events)
        return await self._put(key, body, "application/x-ndjson", encoding="gzip")

    async def send_checkpoint(self, entry: bytes, checkpoint: OutCheckpoint) -> int | None:
        key = checkpoint_key(self.config.prefix, self.target.workspace_id, checkpoint.tree_size)
        return await self._put(key, entry, "text/plain; charset=utf-8")

    async def _put(
        self, key: str, body: bytes, content_type: str, *, encoding: str | None = None
    ) -> int:
        await self._check_endpoint()
        extra = {"ContentEncoding": encoding} if encoding else {}
        try:
            s3 = await self._s3()
            answer = await s3.put_object(
                Bucket=self.config.bucket, Key=key, Body=body, ContentType=content_type, **extra
            )
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            error = exc.response.get("Error", {})
            judge_status(
                int(meta.get("HTTPStatusCode") or 500),
                meta.get("HTTPHeaders") or {},
                f"{error.get('Code', '')} {error.get('Message', '')}",
            )
            raise SinkError(str(exc), retryable=True) from None
        except BotoCoreError as exc:
            refused = refusal_in(exc)  # by the resolver, as aiohttp connected
            if refused is not None:
                raise SinkError(f"refused: {refused}", retryable=False) from None
            raise SinkError(f"network error: {exc}", retryable=True) from None
        status: int = answer["ResponseMetadata"]["HTTPStatusCode"]
        return status

    def refuses_event(self, error: SinkError) -> bool:
        """An object store takes any bytes: its 400s (a malformed authorization header, a
        wrong region, ...) are about the destination, never one event."""
        return False

    def secret_values(self) -> list[str]:
        return [self.config.secret_access_key]

    async def aclose(self) -> None:
        await self._stack.aclose()
