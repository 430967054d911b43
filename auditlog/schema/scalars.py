"""DateTime: RFC 3339 in UTC with a Z, parsed strictly (a time zone is required)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from auditlog.model import format_timestamp, parse_timestamp


def _parse_datetime(value: Any) -> datetime:
    return parse_timestamp(value)


DateTimeScalar = strawberry.scalar(
    name="DateTime",
    description="An RFC 3339 timestamp in UTC, such as 2026-11-28T10:00:00.000000Z.",
    serialize=format_timestamp,
    parse_value=_parse_datetime,
)

SCALAR_MAP: dict[object, Any] = {datetime: DateTimeScalar}
