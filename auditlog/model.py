"""Domain types every layer may use: categories, plans, roles, the caller, filters,
event ids and timestamps, and the stored rows that services and the schema pass
between them (exports, checkpoints, actor activity, dead letters). Nothing here
speaks SQL, HTTP or GraphQL."""

from __future__ import annotations

import ipaddress
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from auditlog.errors import ForbiddenError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Category(StrEnum):
    """An event's category; its value is what events and the API carry."""

    AUTHENTICATION = "AUTHENTICATION"
    WORKSPACE = "WORKSPACE"
    DATA = "DATA"
    COMMUNICATION = "COMMUNICATION"
    AI = "AI"


class Plan(StrEnum):
    """A workspace's plan; its value is what the database and the API carry."""

    EARLY_ACCESS = "EARLY_ACCESS"
    PROFESSIONAL = "PROFESSIONAL"
    ENTERPRISE = "ENTERPRISE"


class Role(StrEnum):
    """What a key or a session may do; its value is what keys and tokens carry."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    INGEST = "ingest"


# Tuples, not sets: a token's claim may be any JSON value, hashable or not.
READER_ROLES = (Role.OWNER, Role.ADMIN)
ADMIN_ROLES = (Role.OWNER, Role.ADMIN)  # who changes what a workspace sends out
SESSION_ROLES = (Role.OWNER, Role.ADMIN, Role.MEMBER)


@dataclass(frozen=True)
class Principal:
    """Who is calling: bound to one workspace and a role (a platform ingest key to none)."""

    workspace_id: str | None  # None: a platform ingest key
    role: Role
    key_id: str | None = None  # API keys
    subject: str | None = None  # console sessions
    email: str | None = None
    expires_at: float | None = None  # console sessions: the JWT's exp (Unix seconds)

    @property
    def can_read(self) -> bool:
        return self.role in READER_ROLES and self.workspace_id is not None

    @property
    def can_ingest(self) -> bool:
        return self.role == Role.INGEST

    def require_reader(self) -> str:
        """The workspace to read, or ForbiddenError for a role without the right."""
        if not self.can_read or self.workspace_id is None:
            raise ForbiddenError(f"the {self.role} role cannot read the audit log")
        return self.workspace_id

    def require_admin(self, what: str) -> str:
        """The workspace to change (owner or admin), or ForbiddenError saying the role
        cannot do `what`."""
        if self.role not in ADMIN_ROLES or self.workspace_id is None:
            raise ForbiddenError(f"the {self.role} role cannot {what}")
        return self.workspace_id

    def require_ingest(self) -> None:
        """ForbiddenError unless this is an ingest key."""
        if not self.can_ingest:
            raise ForbiddenError(f"the {self.role} role cannot ingest events")

    def as_actor(self) -> dict[str, Any]:
        """This caller as the actor of an event the service writes about it."""
        if self.key_id is not None:
            return {"type": "API_KEY", "id": self.key_id, "name": None, "email": None}
        return {"type": "USER", "id": self.subject, "name": None, "email": self.email}


@dataclass(frozen=True)
class WorkspaceRow:
    """A workspace as stored: its plan and how long its events are kept."""

    id: str
    plan: Plan
    retention_days: int | None
    created_at: datetime

    def retention_start(self, now: datetime) -> datetime | None:
        """The oldest occurred_at still inside retention, or None when unlimited."""
        if self.retention_days is None:
            return None
        return now - timedelta(days=self.retention_days)


@dataclass(frozen=True)
class EventFilter:
    """A validated filter; the workspace always comes from the caller's principal."""

    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    actor_email: str | None = None  # lower-cased
    actor_id: str | None = None
    categories: list[str] | None = None
    actions: list[str] | None = None  # expanded from patterns, exact names only
    ip_network: IPNetwork | None = None
    target_id: str | None = None


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7) for events sent without an id."""
    ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds: 2026-11-28T10:00:00.000000Z."""
    v = value.astimezone(UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 - twice as fast as strftime
        v.year,
        v.month,
        v.day,
        v.hour,
        v.minute,
        v.second,
        v.microsecond,
    )


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?$"
)


def parse_timestamp(value: Any) -> datetime:
    """An RFC 3339 timestamp with a time zone, in UTC; raises ValueError otherwise."""
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("must be an RFC 3339 timestamp such as 2026-11-28T10:00:00Z")
    text = value
    fraction = match.group(1)
    if fraction and len(fraction) > 7:  # Python keeps microseconds: drop finer digits
        text = value[: match.start(1)] + fraction[:7] + value[match.end(1) :]
    text = text.upper().replace(" ", "T")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("must carry a time zone (Z or an offset)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be a date between years 1 and 9999 in UTC") from None


@dataclass(frozen=True, slots=True)
class TimePosition:
    """A keyset position in newest-first order."""

    occurred_at: datetime
    seq: int


@dataclass(frozen=True)
class ExportPlan:
    """What an export holds: its snapshot, exact row count and part boundaries."""

    snapshot: str
    retention_start: datetime | None
    row_count: int
    part_size: int
    part_ends: list[TimePosition]


@dataclass(frozen=True)
class ExportRow:
    workspace_id: str
    id: uuid.UUID
    format: str
    filter: dict[str, Any]
    criteria: EventFilter
    plan: ExportPlan
    created_by: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    event_format: str = "NATIVE"  # or OCSF (JSON and NDJSON files only)

    @property
    def part_count(self) -> int:
        """Parts needed for the rows; an empty result still has one (empty) file."""
        return max(1, -(-self.plan.row_count // self.plan.part_size))

    def part_rows(self, part: int) -> int:
        size = self.plan.part_size
        return max(0, min(size, self.plan.row_count - size * (part - 1)))


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    workspace_id: str
    tree_size: int
    root_hash: bytes
    signed_note: str
    verifier_key: str
    sealed_at: datetime


ACTIVITY_MAX_EVENTS = 10_000  # events actorActivity reads at most: the newest in the range


@dataclass(frozen=True, slots=True)
class SeenRow:
    kind: str  # ip | country | device
    value: str
    count: int
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class ActivityRows:
    rows: list[SeenRow]
    truncated: bool  # the range holds more than ACTIVITY_MAX_EVENTS events: the newest were read


@dataclass(frozen=True)
class DeadLetterRow:
    event_id: uuid.UUID
    status_code: int | None
    error: str
    failed_at: datetime
    queued: bool
    attempts: int
