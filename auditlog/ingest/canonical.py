"""One canonical JSON form for stored payloads (RFC 8785 style).

Sorted keys, no insignificant white space, UTF-8, timestamps in one fixed UTC
format. A payload serialised here is reproducible byte for byte, so a hash of
each event (and of each prefix of the log) can be computed at any time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson


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


def canonical_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
