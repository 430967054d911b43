"""Managing streaming destinations: create, update, pause, resume, replay, delete,
test, list.

Owner and admin of ENTERPRISE workspaces only. Every change writes an
audit_log.stream.* event with the caller as actor. Credentials are encrypted
before they reach the database and only ever shown masked; a webhook secret
is shown once, when it is created.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from auditlog.config import Settings
from auditlog.errors import BadInputError, NotFoundError
from auditlog.ingest.canonical import canonical_json
from auditlog.ingest.validate import EventIn, Target
from auditlog.model import Category, format_timestamp, uuid7
from auditlog.services.ingest import Ingestor, event_payload
from auditlog.services.service_events import SYSTEM_ACTOR, AuditedTransaction, audited
from auditlog.storage import streams as store
from auditlog.storage.events import read_safe_watermark
from auditlog.storage.workspaces import read_workspace
from auditlog.streaming.config import (
    CONFIG_CLASSES,
    DestinationConfig,
    WebhookConfig,
    restore_config,
    validate_config,
)
from auditlog.streaming.credentials import CredentialBox
from auditlog.streaming.delivery import out_event, scrub
from auditlog.streaming.netguard import NetworkPolicy
from auditlog.streaming.sinks import SEND_TIMEOUT, build_sink
from auditlog.streaming.sinks.base import OutEvent, SinkError, SinkTarget

MAX_DESTINATIONS = 25
MAX_NAME = 200
# lagEvents counts at most this many events per destination: exact below it, and
# "at least LAG_CAP" at it. With MAX_DESTINATIONS, a listing reads at most 250,000
# index entries, and one request lists them once whatever its aliases
# (resolvers.streaming).
LAG_CAP = 10_000
# A test with indexer acknowledgement waits this long for it: a caller is waiting.
TEST_ACK_TIMEOUT = 10.0


@dataclass(frozen=True)
class DestinationView:
    row: store.DestinationRow
    masked_config: dict[str, Any]
    lag_events: int


@dataclass(frozen=True)
class CreatedDestination:
    view: DestinationView
    webhook_secret: str | None


@dataclass(frozen=True)
class DeliveryTest:
    ok: bool
    status_code: int | None
    error: str | None
    latency_ms: float | None


@dataclass(frozen=True)
class Caller:
    workspace_id: str
    actor: dict[str, Any]


def _name(value: str, argument: str) -> str:
    name = value.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise BadInputError(argument, f"must be 1 to {MAX_NAME} characters")
    return name


def _categories(values: list[str] | None, argument: str) -> list[str]:
    if values is None:
        return sorted(c.value for c in Category)
    if not values:
        raise BadInputError(argument, "name at least one category, or leave it out for all")
    return sorted(set(values))


def _parse_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError("streaming destination not found") from None


class StreamingAdmin:
    def __init__(self, pool: asyncpg.Pool, ingestor: Ingestor, settings: Settings) -> None:
        self.pool = pool
        self.ingestor = ingestor
        self.box = CredentialBox(settings.secret_key)
        self.policy = NetworkPolicy(settings.allow_private_destinations)

    async def _view(self, conn: asyncpg.Connection, row: store.DestinationRow) -> DestinationView:
        lags = await store.count_pending_events(conn, row.workspace_id, LAG_CAP, row.id)
        return _view_of(row, lags.get(row.id, 0))

    @staticmethod
    async def _event(
        audit: AuditedTransaction,
        caller: Caller,
        action: str,
        row: store.DestinationRow,
        **meta: Any,
    ) -> None:
        await audit.record(
            caller.workspace_id,
            action,
            actor=caller.actor,
            targets=[_target(row)],
            metadata={
                "kind": row.kind,
                "categories": row.categories,
                "format": row.format,
                **meta,
            },
        )

    async def list_all(self, caller: Caller) -> list[DestinationView]:
        async with self.pool.acquire() as conn:
            rows = await store.read_destinations(conn, caller.workspace_id)
            lags = await store.count_pending_events(conn, caller.workspace_id, LAG_CAP)
        return [_view_of(row, lags.get(row.id, 0)) for row in rows]

    async def create(
        self,
        caller: Caller,
        name: str,
        categories: list[str] | None,
        config: DestinationConfig,
        event_format: str = "NATIVE",
    ) -> CreatedDestination:
        name = _name(name, "input.name")
        cats = _categories(categories, "input.categories")
        config = await validate_config(config, self.policy, "input.config")
        # The destination and its audit event commit together, or neither does.
        async with self.pool.acquire() as conn, audited(conn, self.ingestor) as audit:
            if await store.count_destinations(conn, caller.workspace_id) >= MAX_DESTINATIONS:
                raise BadInputError("input", f"at most {MAX_DESTINATIONS} destinations a workspace")
            # New events only: the cursor starts at what is final now.
            xid, seq = await read_safe_watermark(conn)
            row = await store.insert_destination(
                conn,
                store.NewDestination(
                    workspace_id=caller.workspace_id,
                    id=uuid7(),
                    name=name,
                    kind=config.KIND,
                    categories=cats,
                    config=config.public(),
                    secrets=self.box.seal(config.credentials()),
                    cursor_xid=xid,
                    cursor_seq=seq,
                    format=event_format,
                ),
            )
            view = await self._view(conn, row)
            await self._event(audit, caller, "audit_log.stream.created", row)
        secret = config.secret if isinstance(config, WebhookConfig) else None
        return CreatedDestination(view, secret)

    async def _read(
        self, conn: asyncpg.Connection, caller: Caller, id: str
    ) -> store.DestinationRow:
        row = await store.read_destination(conn, caller.workspace_id, _parse_id(id))
        if row is None:
            raise NotFoundError("streaming destination not found")
        return row

    async def update(
        self,
        caller: Caller,
        id: str,
        name: str | None,
        categories: list[str] | None,
        config: DestinationConfig | None,
        event_format: str | None = None,
    ) -> DestinationView:
        change = store.DestinationChange(
            name=_name(name, "input.name") if name is not None else None,
            categories=_categories(categories, "input.categories")
            if categories is not None
            else None,
            format=event_format,
        )
        async with self.pool.acquire() as conn, audited(conn, self.ingestor) as audit:
            current = await self._read(conn, caller, id)
            if config is not None:
                if current.kind != config.KIND:
                    raise BadInputError(
                        "input.config", f"this destination's kind is {current.kind}"
                    )
                if isinstance(config, WebhookConfig) and config.secret is None:
                    kept = self.box.open(current.secrets)["secret"]
                    config = replace(config, secret=kept)
                config = await validate_config(config, self.policy, "input.config")
                change = replace(
                    change, config=config.public(), secrets=self.box.seal(config.credentials())
                )
            row = await store.update_destination(conn, caller.workspace_id, current.id, change)
            if row is None:
                raise NotFoundError("streaming destination not found")
            view = await self._view(conn, row)
            changed = [
                k
                for k in ("name", "categories", "config", "format")
                if getattr(change, k) is not None
            ]
            await self._event(audit, caller, "audit_log.stream.updated", row, changed=changed)
        return view

    async def set_paused(self, caller: Caller, id: str, paused: bool) -> DestinationView:
        """Pause (the cursor stays) or resume (retry at once, from the cursor)."""
        async with self.pool.acquire() as conn, audited(conn, self.ingestor) as audit:
            current = await self._read(conn, caller, id)
            status = "PAUSED" if paused else "ACTIVE"
            row = await store.update_destination(
                conn, caller.workspace_id, current.id, store.DestinationChange(status=status)
            )
            if row is None:
                raise NotFoundError("streaming destination not found")
            view = await self._view(conn, row)
            await self._event(
                audit, caller, "audit_log.stream.updated", row, changed=["status"], status=status
            )
        return view

    async def replay(self, caller: Caller, id: str, occurred_from: datetime) -> DestinationView:
        """Resend from the earliest ingest position of the retained events occurred at
        or after `occurred_from` (clamped to the retention): the cursor moves back to
        just before it, never forward, in one transaction with its audit event."""
        now = datetime.now(UTC)
        if occurred_from.tzinfo is None:
            raise BadInputError("from", "needs a UTC offset (2026-11-28T00:00:00Z)")
        if occurred_from > now:
            raise BadInputError("from", "is in the future")
        async with self.pool.acquire() as conn:
            current = await self._read(conn, caller, id)
            workspace = await read_workspace(conn, caller.workspace_id)
            retention = workspace.retention_start(now) if workspace else None
            replay_from = max(occurred_from, retention) if retention else occurred_from
            async with audited(conn, self.ingestor) as audit:
                replayed = await store.replay_destination(
                    conn, caller.workspace_id, current.id, replay_from
                )
                if replayed is None:
                    raise NotFoundError("streaming destination not found")
                row = replayed.row
                await audit.record(
                    caller.workspace_id,
                    "audit_log.stream.replayed",
                    actor=caller.actor,
                    targets=[_target(row)],
                    metadata={
                        "kind": row.kind,
                        "categories": row.categories,
                        "from": format_timestamp(occurred_from),
                        "replayFrom": format_timestamp(replay_from),
                        "cursor": _position(row.cursor_xid, row.cursor_seq),
                        "previousCursor": _position(*replayed.previous),
                    },
                )
            view = await self._view(conn, row)
        return view

    async def delete(self, caller: Caller, id: str) -> bool:
        async with self.pool.acquire() as conn, audited(conn, self.ingestor) as audit:
            row = await store.delete_destination(conn, caller.workspace_id, _parse_id(id))
            if row is None:
                raise NotFoundError("streaming destination not found")
            await self._event(audit, caller, "audit_log.stream.deleted", row)
        return True

    async def test(self, caller: Caller, id: str) -> DeliveryTest:
        """Send one test event now, through the destination's sink (with useAck, until
        the indexer acknowledged it); the cursor does not move."""
        async with self.pool.acquire() as conn:
            row = await self._read(conn, caller, id)
        config = restore_config(row.kind, row.config, self.box.open(row.secrets))
        target = SinkTarget(row.workspace_id, row.id)
        sink = build_sink(target, config, self.policy, SEND_TIMEOUT, TEST_ACK_TIMEOUT)
        event = out_event(test_event(row), row.format)
        started = time.perf_counter()
        try:
            status = await asyncio.wait_for(
                sink.send([sink.encode(event)], [event]),
                timeout=SEND_TIMEOUT + 2 + sink.confirm_seconds,
            )
            return DeliveryTest(True, status, None, _ms(started))
        except TimeoutError:
            return DeliveryTest(False, None, "timed out", _ms(started))
        except SinkError as exc:
            error = scrub(str(exc), sink.secret_values())
            return DeliveryTest(False, exc.status_code, error, _ms(started))
        finally:
            await sink.aclose()


def _target(row: store.DestinationRow) -> dict[str, Any]:
    return {"type": "streaming_destination", "id": str(row.id), "name": row.name}


def _position(xid: int, seq: int) -> dict[str, int]:
    """A cursor as the audit event's metadata shows it: a position in ingest order."""
    return {"xid": xid, "seq": seq}


def _view_of(row: store.DestinationRow, lag: int) -> DestinationView:
    return DestinationView(row, CONFIG_CLASSES[row.kind].masked(row.config), lag)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def test_event(row: store.DestinationRow) -> OutEvent:
    now = datetime.now(UTC)
    event = EventIn(
        id=uuid7(),
        id_given=True,
        workspace_id=row.workspace_id,
        occurred_at=now,
        action="audit_log.stream.test",
        category=Category.WORKSPACE,
        actor=SYSTEM_ACTOR,
        targets=(Target("streaming_destination", str(row.id), row.name),),
        ip=None,
        user_agent=None,
        metadata={"test": True},
    )
    payload = event_payload(event, row.workspace_id, format_timestamp(now), None, None, None, [])
    return OutEvent(0, 0, now, canonical_json(payload))
