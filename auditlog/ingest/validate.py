"""Validation of incoming events: every refusal names the field and the reason.

`validate_event` turns one decoded JSON object into an `EventIn` or a list of
`FieldError`s. It checks shape and bounds only; checks that need the workspace
(retention, existence) are made by the ingest service.
"""

from __future__ import annotations

import ipaddress
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from auditlog.catalog import CATEGORY_OF, MAIL_CONTENT_KEYS
from auditlog.errors import FieldError
from auditlog.ingest.canonical import float_for_orjson
from auditlog.jcs import MAX_SAFE_INTEGER
from auditlog.model import Category, IPAddress, parse_timestamp

MAX_EVENTS = 1000
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_METADATA_BYTES = 32 * 1024
MAX_METADATA_DEPTH = 16
MAX_TARGETS = 64
MAX_STRING = 1024
MAX_USER_AGENT = 2048
FUTURE_SKEW = timedelta(minutes=5)
SERVICE_PREFIX = "audit_log."
ACTOR_TYPES = frozenset({"USER", "SYSTEM", "API_KEY"})
_ACTOR_FIELDS = frozenset({"type", "id", "name", "email"})
_TARGET_FIELDS = frozenset({"type", "id", "name"})
_FIELDS = frozenset(
    {
        "id",
        "workspaceId",
        "occurredAt",
        "action",
        "actor",
        "targets",
        "ipAddress",
        "userAgent",
        "metadata",
    }
)


# Plain (not frozen) slotted dataclasses: frozen ones cost microseconds per event to build.
@dataclass(slots=True)
class Actor:
    type: str
    id: str | None
    name: str | None
    email: str | None


@dataclass(slots=True)
class Target:
    type: str
    id: str | None
    name: str | None


@dataclass(slots=True)
class EventIn:
    """A structurally valid event, before enrichment."""

    id: uuid.UUID
    id_given: bool
    workspace_id: str | None
    occurred_at: datetime
    action: str
    category: Category
    actor: Actor
    targets: tuple[Target, ...]
    ip: IPAddress | None
    user_agent: str | None
    metadata: dict[str, Any]
    # orjson writes metadata exactly as RFC 8785 does (validation found out);
    # False, the safe default, stores the event through jcs_dumps.
    metadata_plain: bool = False


# Placeholder id of an event sent without one; the ingest service assigns a UUIDv7.
_NO_ID = uuid.UUID(int=0)


@lru_cache(maxsize=65536)
def parse_ip(text: str) -> IPAddress:
    """Parse an address (cached: the same addresses repeat); raises ValueError.

    IPv6 zone ids (`fe80::1%eth0`) are refused: they are free text that would
    travel into exports and pages, and mean nothing outside the sender's host.
    """
    address = ipaddress.ip_address(text)
    if getattr(address, "scope_id", None) is not None:
        raise ValueError("zone ids are not accepted")
    return address


class _Errors:
    def __init__(self, index: int) -> None:
        self.index = index
        self.items: list[FieldError] = []

    def add(self, field: str, message: str) -> None:
        self.items.append(FieldError(self.index, field, message))


def _opt_str(
    obj: dict[str, Any], key: str, path: str, errors: _Errors, *, column: bool = False
) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(path, "must be a string")
        return None
    if len(value) > MAX_STRING:
        errors.add(path, f"must be at most {MAX_STRING} characters")
        return None
    if column and "\x00" in value:  # a PostgreSQL text column cannot hold it
        errors.add(path, "must not contain the NUL character (U+0000)")
        return None
    return value


# Nothing in an audit log happened before this; it also keeps every date far
# from datetime's limits and the partition range sane.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def _actor(raw: Any, errors: _Errors) -> Actor | None:
    if raw is None:  # optional in the contract: an event without one is the system's
        return Actor("SYSTEM", None, None, None)
    if not isinstance(raw, dict):
        errors.add("actor", "must be an object with a type")
        return None
    if not _ACTOR_FIELDS.issuperset(raw):
        unknown = sorted(set(raw) - _ACTOR_FIELDS)[0]
        errors.add(f"actor.{unknown}", "is not a known actor field")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in ACTOR_TYPES:
        errors.add("actor.type", "must be one of USER, SYSTEM, API_KEY")
    email = _opt_str(raw, "email", "actor.email", errors, column=True)
    if email is not None and ("@" not in email or email.strip() != email):
        errors.add("actor.email", "must be an email address")
    actor_id = _opt_str(raw, "id", "actor.id", errors, column=True)
    name = _opt_str(raw, "name", "actor.name", errors)
    return Actor(str(kind), actor_id, name, email)


def _targets(raw: Any, errors: _Errors) -> tuple[Target, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.add("targets", "must be an array")
        return ()
    if len(raw) > MAX_TARGETS:
        errors.add("targets", f"must hold at most {MAX_TARGETS} targets")
        return ()
    out: list[Target] = []
    for i, item in enumerate(raw):
        path = f"targets[{i}]"
        if not isinstance(item, dict):
            errors.add(path, "must be an object with a type")
            continue
        if not _TARGET_FIELDS.issuperset(item):
            unknown = sorted(set(item) - _TARGET_FIELDS)[0]
            errors.add(f"{path}.{unknown}", "is not a known target field")
        kind = item.get("type")
        if not isinstance(kind, str) or not kind or len(kind) > 128:
            errors.add(f"{path}.type", "is required: a string of 1 to 128 characters")
            continue
        out.append(
            Target(
                kind,
                _opt_str(item, "id", f"{path}.id", errors, column=True),
                _opt_str(item, "name", f"{path}.name", errors),
            )
        )
    return tuple(out)


# Beyond this, JSON numbers (doubles) no longer carry every integer exactly, and
# RFC 8785 refuses such integers. Doubles from 2**53 up to 1e21 are refused too:
# JCS writes them as integer digits, which parse back as such an integer.
_INTEGER_DIGITS_FROM = 2.0**53
_EXPONENT_FROM = 1e21
_BIG_NUMBER = (
    f"is beyond +-{MAX_SAFE_INTEGER} (2**53 - 1), the integers a JSON number carries "
    "exactly: send such numbers as strings"
)


def _at(path: str, key: str | int) -> str:
    return f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"


def _scan(raw: dict[str, Any], errors: _Errors) -> bool:
    """One walk over metadata: the depth limit, numbers RFC 8785 cannot carry
    (refused, naming their path), and whether orjson writes it as JCS does.

    Integral floats in the safe range become ints in place (JCS writes 2.0 as
    `2`, as orjson writes the int), so that only rare floats and keys holding a
    character from U+E000 up leave orjson's fast path. Returns that answer.
    """
    plain = True
    stack: list[tuple[Any, int, str]] = [(raw, 1, "metadata")]
    while stack:
        container, depth, path = stack.pop()
        if not container:
            continue
        if depth >= MAX_METADATA_DEPTH:  # its items would be deeper than the limit
            errors.add("metadata", f"nests deeper than {MAX_METADATA_DEPTH} levels")
            return plain
        items = container.items() if type(container) is dict else enumerate(container)
        for key, value in items:
            if type(key) is str and not key.isascii() and max(key) >= "\ue000":
                plain = False  # JCS sorts it by UTF-16 code units, orjson by code point
            kind = type(value)
            if kind is str or kind is bool or value is None:
                continue
            if kind is int:
                if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                    errors.add(_at(path, key), _BIG_NUMBER)
            elif kind is float:
                if -_INTEGER_DIGITS_FROM < value < _INTEGER_DIGITS_FROM:  # most floats
                    form = float_for_orjson(value)
                    if form is None:
                        plain = False
                    elif form is not value:
                        container[key] = form
                elif not math.isfinite(value):  # orjson.loads refuses them: for other callers
                    errors.add(_at(path, key), "must be a finite number")
                elif abs(value) < _EXPONENT_FROM:
                    errors.add(_at(path, key), _BIG_NUMBER)
                elif float_for_orjson(value) is None:
                    plain = False
            elif kind is dict or kind is list:
                stack.append((value, depth + 1, _at(path, key)))
    return plain


def _content_key(value: Any, path: str) -> str | None:
    """The path of the first key that would carry mail content, if any."""
    if isinstance(value, dict):
        for key, inner in value.items():
            here = f"{path}.{key}"
            if key.lower() in MAIL_CONTENT_KEYS:
                return here
            found = _content_key(inner, here)
            if found:
                return found
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found = _content_key(inner, f"{path}[{i}]")
            if found:
                return found
    return None


def _metadata(raw: Any, category: Category | None, errors: _Errors) -> tuple[dict[str, Any], bool]:
    """The metadata, and whether orjson writes it as RFC 8785 does (see _scan)."""
    if raw is None:
        return {}, True
    if not isinstance(raw, dict):
        errors.add("metadata", "must be a JSON object")
        return {}, True
    try:
        size = len(orjson.dumps(raw))
    except (TypeError, orjson.JSONEncodeError):
        errors.add("metadata", "holds a value JSON cannot carry (integers are limited to 64 bits)")
        return {}, True
    if size > MAX_METADATA_BYTES:
        errors.add("metadata", f"is {size} bytes; at most {MAX_METADATA_BYTES} are allowed")
        return {}, True
    failed = len(errors.items)
    plain = _scan(raw, errors)
    if len(errors.items) > failed:
        return {}, True
    if category is Category.COMMUNICATION:
        found = _content_key(raw, "metadata")
        if found:
            errors.add(found, "mail events never store message content")
    return raw, plain


def validate_event(raw: Any, index: int, now: datetime) -> EventIn | list[FieldError]:
    errors = _Errors(index)
    if not isinstance(raw, dict):
        errors.add("", "each event must be a JSON object")
        return errors.items
    if not _FIELDS.issuperset(raw):
        errors.add(sorted(set(raw) - _FIELDS)[0], "is not a known event field")

    event_id = _NO_ID
    id_given = raw.get("id") is not None
    if id_given:
        try:
            if not isinstance(raw["id"], str):
                raise ValueError
            event_id = uuid.UUID(raw["id"])
        except ValueError:
            errors.add("id", "must be a UUID")

    workspace_id = raw.get("workspaceId")
    if workspace_id is not None and not isinstance(workspace_id, str):
        errors.add("workspaceId", "must be a string")
        workspace_id = None

    occurred_at: datetime | None = None
    if raw.get("occurredAt") is None:
        errors.add("occurredAt", "is required")
    else:
        try:
            occurred_at = parse_timestamp(raw["occurredAt"])
        except ValueError as exc:
            errors.add("occurredAt", str(exc) if "must" in str(exc) else "is not RFC 3339")
        else:
            if occurred_at > now + FUTURE_SKEW:
                errors.add("occurredAt", "is more than 5 minutes in the future")
            elif occurred_at < EARLIEST:
                errors.add("occurredAt", "must not be before 2000-01-01T00:00:00Z")

    action = raw.get("action")
    category: Category | None = None
    if not isinstance(action, str) or not action:
        errors.add("action", "is required")
    elif action.startswith(SERVICE_PREFIX):
        # The service's own record (keys, exports, streams) must not be forgeable, by any key.
        errors.add("action", "audit_log.* actions are written by the service itself")
    else:
        category = CATEGORY_OF.get(action)
        if category is None:
            errors.add("action", f"{action[:100]!r} is not in the event catalog")

    actor = _actor(raw.get("actor"), errors)
    targets = _targets(raw.get("targets"), errors)

    ip: IPAddress | None = None
    if raw.get("ipAddress") is not None:
        try:
            if not isinstance(raw["ipAddress"], str) or len(raw["ipAddress"]) > 64:
                raise ValueError
            ip = parse_ip(raw["ipAddress"])
        except ValueError:
            errors.add("ipAddress", "must be an IPv4 or IPv6 address")

    user_agent = raw.get("userAgent")
    if user_agent is not None and (
        not isinstance(user_agent, str) or len(user_agent) > MAX_USER_AGENT
    ):
        errors.add("userAgent", f"must be a string of at most {MAX_USER_AGENT} characters")
        user_agent = None

    metadata, plain = _metadata(raw.get("metadata"), category, errors)

    if errors.items:
        return errors.items
    assert occurred_at is not None and category is not None and actor is not None
    assert isinstance(action, str)
    return EventIn(
        id=event_id,
        id_given=id_given,
        workspace_id=workspace_id,
        occurred_at=occurred_at,
        action=action,
        category=category,
        actor=actor,
        targets=targets,
        ip=ip,
        user_agent=user_agent,
        metadata=metadata,
        metadata_plain=plain,
    )
