"""GraphQL types of exports; built from storage rows by from_row()."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from auditlog.model import ExportRow, format_timestamp
from auditlog.schema.inputs import AuditEventFilter
from auditlog.schema.types import EventFormat
from auditlog.services.exports import ExportLink, is_expired


@strawberry.enum
class ExportFormat(Enum):
    CSV = "CSV"
    JSON = "JSON"
    NDJSON = "NDJSON"


@strawberry.enum
class ExportStatus(Enum):
    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"


@strawberry.type
class ExportFile:
    part: int
    row_count: int
    url: str = strawberry.field(
        description="Signed download link (plain GET, no header); expires after an hour by default."
    )


@strawberry.type
class Export:
    id: strawberry.ID
    format: ExportFormat
    event_format: EventFormat
    filter: JSON
    status: ExportStatus
    row_count: int
    files: list[ExportFile]
    created_at: datetime
    expires_at: datetime
    proof_url: str | None = strawberry.field(
        description=(
            "Signed link (plain GET, no header) to the export's proof bundle: an inclusion "
            "proof of every event of its files against one signed checkpoint, for `auditlog "
            "verify`. NATIVE JSON exports only; null for CSV, NDJSON and OCSF exports (an "
            "OCSF file does not hold the events the log's leaves hash), and once the export "
            "expired."
        )
    )

    @classmethod
    def from_row(
        cls, row: ExportRow, links: list[ExportLink], proof_url: str | None, now: datetime
    ) -> Export:
        return cls(
            id=strawberry.ID(str(row.id)),
            format=ExportFormat(row.format),
            event_format=EventFormat(row.event_format),
            filter=cast(JSON, row.filter),
            status=ExportStatus.EXPIRED if is_expired(row, now) else ExportStatus.READY,
            row_count=row.plan.row_count,
            files=[ExportFile(part=x.part, row_count=x.row_count, url=x.url) for x in links],
            created_at=row.created_at,
            expires_at=row.expires_at,
            proof_url=proof_url,
        )


@strawberry.input
class CreateExportInput:
    filter: AuditEventFilter | None = None
    format: ExportFormat
    event_format: EventFormat | None = strawberry.field(
        default=EventFormat.NATIVE,
        description="NATIVE (the default) or OCSF, with JSON and NDJSON files only",
    )


def filter_as_json(flt: AuditEventFilter) -> dict[str, Any]:
    """The filter as the caller gave it, in API names, without unset fields."""
    shown: dict[str, Any] = {
        "occurredFrom": format_timestamp(flt.occurred_from) if flt.occurred_from else None,
        "occurredTo": format_timestamp(flt.occurred_to) if flt.occurred_to else None,
        "actorEmail": flt.actor_email,
        "actorId": flt.actor_id,
        "categories": [c.value for c in flt.categories] if flt.categories is not None else None,
        "actions": flt.actions,
        "ipAddress": flt.ip_address,
        "targetId": flt.target_id,
    }
    return {k: v for k, v in shown.items() if v is not None}
