"""The ingest service: a batch is validated whole, enriched, and appended in one
transaction, or refused whole with every error named.

Policy: all or nothing. Idempotent on (workspace, id): an id already stored,
or repeated inside the batch, is reported as a duplicate and stored once.
After commit, each touched workspace's channel is notified; the notification
carries no event (the database is the only truth: docs/architecture.md), and
it is only queued: the bus publishes it in the background, so a slow or absent
Redis never delays an ingest answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import asyncpg

from auditlog.catalog import LOGIN_ACTIONS
from auditlog.errors import BatchRejected, FieldError
from auditlog.ingest.canonical import canonical_json, float_for_orjson
from auditlog.ingest.enrich import GeoIP, parse_device
from auditlog.ingest.validate import MAX_EVENTS, EventIn, validate_event
from auditlog.model import IPAddress, WorkspaceRow, format_timestamp, uuid7
from auditlog.storage import events as event_store
from auditlog.storage.database import discard_if_broken
from auditlog.storage.workspaces import read_workspaces

log = logging.getLogger(__name__)

Notifier = Callable[[set[str]], Awaitable[None]]


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    ids: list[str]
    # Workspaces that got new events: their live tails are rung after commit.
    workspaces: frozenset[str] = frozenset()


@lru_cache(maxsize=65536)
def _ip_text(ip: IPAddress) -> str:
    return str(ip)


def _actor_key(event: EventIn) -> str | None:
    if event.actor.email:
        return "email:" + event.actor.email.lower()
    if event.actor.id:
        return "id:" + event.actor.id
    return None


def _device_label(device: dict[str, Any] | None) -> str | None:
    if not device:
        return None
    parts = [device.get("browser"), device.get("os"), device.get("device")]
    label = " / ".join(p for p in parts if p)
    return label or None


@lru_cache(maxsize=65536, typed=True)  # typed: 51 and 51.0 are written differently
def _plain_coordinates(latitude: Any, longitude: Any) -> bool:
    """Whether orjson writes a location's coordinates as RFC 8785 does (cached:
    locations repeat, as the addresses they come from do)."""
    return all(type(v) is not float or float_for_orjson(v) is v for v in (latitude, longitude))


def event_payload(
    e: EventIn,
    workspace_id: str,
    received: str,
    ip_text: str | None,
    location: dict[str, Any] | None,
    device: dict[str, Any] | None,
    anomalies: list[str],
) -> dict[str, Any]:
    """An event's stored payload, before its canonical JSON: the one shape that
    queries, exports, streams and the integrity tree all read."""
    return {
        "id": str(e.id),
        "workspaceId": workspace_id,
        "occurredAt": format_timestamp(e.occurred_at),
        "receivedAt": received,
        "action": e.action,
        "category": e.category.value,
        "actor": {
            "type": e.actor.type,
            "id": e.actor.id,
            "name": e.actor.name,
            "email": e.actor.email,
        },
        "targets": [{"type": t.type, "id": t.id, "name": t.name} for t in e.targets],
        "ipAddress": ip_text,
        "userAgent": e.user_agent,
        "location": location,
        "device": device,
        "metadata": e.metadata,
        "anomalies": anomalies,
    }


@dataclass
class _Prepared:
    event: EventIn
    workspace_id: str
    ip_text: str | None
    location: dict[str, Any] | None
    device: dict[str, Any] | None
    anomalies: list[str]
    # The payload may take orjson's fast path (see auditlog.ingest.canonical).
    plain: bool = False


class Ingestor:
    """Appends events. One per process; safe to share between requests."""

    def __init__(
        self, pool: asyncpg.Pool | None, geoip: GeoIP, notify: Notifier | None = None
    ) -> None:
        self._pool = pool
        self._geoip = geoip
        self._notify = notify
        self._known_months: set[tuple[int, int]] = set()

    def validate(
        self, raw_events: Sequence[Any], scope_workspace: str | None, now: datetime
    ) -> list[EventIn]:
        """Shape checks for the whole batch; raises BatchRejected naming every error."""
        if not raw_events:
            raise BatchRejected([FieldError(0, "", "the batch holds no event")])
        if len(raw_events) > MAX_EVENTS:
            raise BatchRejected(
                [FieldError(MAX_EVENTS, "", f"a batch holds at most {MAX_EVENTS} events")]
            )
        errors: list[FieldError] = []
        valid: list[EventIn] = []
        for index, raw in enumerate(raw_events):
            result = validate_event(raw, index, now)
            if isinstance(result, list):
                errors.extend(result)
                continue
            if scope_workspace is None and not result.workspace_id:
                errors.append(FieldError(index, "workspaceId", "is required with a platform key"))
            elif scope_workspace is not None and result.workspace_id not in (
                None,
                scope_workspace,
            ):
                errors.append(
                    FieldError(index, "workspaceId", "does not match the key's workspace")
                )
            valid.append(result)
        if errors:
            raise BatchRejected(errors)
        return valid

    @staticmethod
    def _check_workspaces(
        events: Sequence[EventIn],
        scope_workspace: str | None,
        workspaces: dict[str, WorkspaceRow],
        now: datetime,
    ) -> None:
        errors: list[FieldError] = []
        for index, event in enumerate(events):
            ws_id = event.workspace_id or scope_workspace
            workspace = workspaces.get(ws_id or "")
            if workspace is None:
                errors.append(FieldError(index, "workspaceId", "no such workspace"))
                continue
            start = workspace.retention_start(now)
            if start is not None and event.occurred_at < start:
                errors.append(
                    FieldError(
                        index,
                        "occurredAt",
                        f"is older than the workspace's retention of "
                        f"{workspace.retention_days} days",
                    )
                )
        if errors:
            raise BatchRejected(errors)

    async def ingest(self, raw_events: Sequence[Any], scope_workspace: str | None) -> IngestResult:
        now = datetime.now(UTC)
        events = self.validate(raw_events, scope_workspace, now)
        return await self.append(events, scope_workspace, now)

    async def append(
        self,
        events: Sequence[EventIn],
        scope_workspace: str | None,
        now: datetime | None = None,
        *,
        conn: asyncpg.Connection | None = None,
    ) -> IngestResult:
        """Store validated events (also used by the service for its own audit_log.* events).

        With `conn`, the events are written inside the caller's open transaction
        (so that they commit or roll back with the caller's own writes) and no
        one is notified: after its commit the caller passes the result to
        `notify_committed`.
        """
        now = now or datetime.now(UTC)
        if conn is not None:
            return await self._append_on(conn, events, scope_workspace, now)
        if self._pool is None:
            raise RuntimeError("this Ingestor appends only on a caller's connection")
        async with self._pool.acquire() as own:
            try:
                result = await self._append_on(own, events, scope_workspace, now)
            except Exception as exc:
                discard_if_broken(own, exc)
                raise
        await self.notify_committed(result)
        return result

    async def notify_committed(self, result: IngestResult) -> None:
        """Ring the live tails of the workspaces that got committed events (queued on
        the bus: returns at once, whatever state Redis is in)."""
        if result.workspaces and self._notify is not None:
            try:
                await self._notify(set(result.workspaces))
            except Exception:  # readers catch up from the database on their next poll
                log.exception("live notification failed after commit")

    async def _append_on(
        self,
        conn: asyncpg.Connection,
        events: Sequence[EventIn],
        scope_workspace: str | None,
        now: datetime,
    ) -> IngestResult:
        events = [self._with_id(e, now) for e in events]
        ws_ids = sorted({e.workspace_id or scope_workspace or "" for e in events})
        workspaces = await read_workspaces(conn, ws_ids)
        self._check_workspaces(events, scope_workspace, workspaces, now)
        await self._ensure_partitions(conn, events)
        prepared = [self._prepare(e, scope_workspace) for e in events]
        async with conn.transaction():
            fresh = await self._claim(conn, prepared)
            await self._login_anomalies(conn, fresh)
            received = format_timestamp(now)
            rows = [self._row(p, now, received) for p in fresh]
            await event_store.copy_events(conn, rows)
        return IngestResult(
            accepted=len(fresh),
            duplicates=len(events) - len(fresh),
            ids=[str(e.id) for e in events],
            workspaces=frozenset(p.workspace_id for p in fresh),
        )

    def _prepare(self, e: EventIn, scope_workspace: str | None) -> _Prepared:
        ip_text = _ip_text(e.ip) if e.ip is not None else None
        location = self._geoip.lookup(ip_text) if ip_text is not None else None
        # Every other field is a string, a bool, null or a fixed ASCII key, which
        # orjson writes as JCS does: only metadata and coordinates can differ.
        plain = e.metadata_plain and (
            location is None
            or _plain_coordinates(location.get("latitude"), location.get("longitude"))
        )
        return _Prepared(
            event=e,
            workspace_id=e.workspace_id or scope_workspace or "",
            ip_text=ip_text,
            location=location,
            device=parse_device(e.user_agent) if e.user_agent else None,
            anomalies=[],
            plain=plain,
        )

    @staticmethod
    def _with_id(event: EventIn, now: datetime) -> EventIn:
        if event.id_given:
            return event
        return replace(event, id=uuid7(int(now.timestamp() * 1000)), id_given=True)

    async def _ensure_partitions(self, conn: asyncpg.Connection, events: Iterable[EventIn]) -> None:
        utc_days = {e.occurred_at.astimezone(UTC).date() for e in events}
        missing = [d for d in utc_days if (d.year, d.month) not in self._known_months]
        if missing:
            await event_store.ensure_partitions(conn, missing)
            if conn.is_in_transaction():
                return  # a caller's transaction may still roll the partitions back
            # Past months may be dropped by the retention purge: only the current
            # and later months are remembered; a late event asks the database.
            today = datetime.now(UTC).date()
            self._known_months.update(
                (d.year, d.month) for d in missing if (d.year, d.month) >= (today.year, today.month)
            )

    @staticmethod
    async def _claim(conn: asyncpg.Connection, prepared: list[_Prepared]) -> list[_Prepared]:
        new = await event_store.claim_event_ids(
            conn,
            [p.workspace_id for p in prepared],
            [p.event.id for p in prepared],
            [p.event.occurred_at for p in prepared],
        )
        fresh: list[_Prepared] = []
        for p in prepared:
            key = (p.workspace_id, p.event.id)
            if key in new:
                new.discard(key)  # a repeat inside the batch is a duplicate too
                fresh.append(p)
        return fresh

    @staticmethod
    def _login_values(p: _Prepared) -> list[tuple[str, str]]:
        values: list[tuple[str, str]] = []
        if p.ip_text is not None:
            values.append(("ip", p.ip_text))
        if p.location and p.location.get("countryCode"):
            values.append(("country", str(p.location["countryCode"])))
        label = _device_label(p.device)
        if label:
            values.append(("device", label))
        return values

    async def _login_anomalies(self, conn: asyncpg.Connection, fresh: list[_Prepared]) -> None:
        """Flag logins from an IP, country or device never seen on this actor's
        successful logins; successful logins then become part of that history."""
        logins = [p for p in fresh if p.event.action in LOGIN_ACTIONS and _actor_key(p.event)]
        by_workspace: dict[str, list[_Prepared]] = {}
        for p in logins:
            by_workspace.setdefault(p.workspace_id, []).append(p)
        labels = {"ip": "NEW_IP", "country": "NEW_COUNTRY", "device": "NEW_DEVICE"}
        for ws_id, items in by_workspace.items():
            items.sort(key=lambda p: p.event.occurred_at)
            logins_of = [(p, _actor_key(p.event) or "", self._login_values(p)) for p in items]
            candidates = sorted(
                {(key, kind, value) for _, key, values in logins_of for kind, value in values}
            )
            # Every successful login teaches its values (known ones are skipped).
            learned = [
                (key, kind, value, p.event.occurred_at)
                for p, key, values in logins_of
                if p.event.action == "user.login.success"
                for kind, value in values
            ]
            seen = await event_store.remember_logins(conn, ws_id, candidates, learned)
            for p, key, values in logins_of:
                for kind, value in values:
                    if (key, kind, value) not in seen:
                        p.anomalies.append(labels[kind])
                    if p.event.action == "user.login.success":
                        seen.add((key, kind, value))
                p.anomalies.sort()

    @staticmethod
    def _row(p: _Prepared, now: datetime, received: str) -> event_store.EventRow:
        e = p.event
        payload = event_payload(
            e, p.workspace_id, received, p.ip_text, p.location, p.device, p.anomalies
        )
        return event_store.EventRow(
            workspace_id=p.workspace_id,
            occurred_at=e.occurred_at,
            id=e.id,
            received_at=now,
            action=e.action,
            category=e.category.value,
            actor_type=e.actor.type,
            actor_id=e.actor.id,
            actor_email=e.actor.email.lower() if e.actor.email else None,
            ip=e.ip.packed if e.ip is not None else None,
            target_ids=[t.id for t in e.targets if t.id],
            payload=canonical_json(payload, plain=p.plain),
        )
