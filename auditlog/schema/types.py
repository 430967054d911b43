"""GraphQL types of the log itself. Each is built from stored data by from_payload()
or from_row(); resolvers here only read attributes (Strawberry is slow per field)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any, cast

import orjson
import strawberry
from strawberry.scalars import JSON

from auditlog.catalog import CatalogEntry
from auditlog.model import Category, Plan, WorkspaceRow, parse_timestamp
from auditlog.resolvers import integrity as integrity_resolvers
from auditlog.schema.context import Info
from auditlog.schema.integrity import InclusionProof

# The GraphQL enums of categories and plans are the model's enums themselves, so a
# value converts without a table and the two can never drift apart.
EventCategory = Category
strawberry.enum(Category, name="EventCategory")
strawberry.enum(Plan, name="Plan")


@strawberry.enum(
    description=(
        "The form events leave in: NATIVE, the stored event exactly as `payload` shows it; "
        "OCSF, its Open Cybersecurity Schema Framework 1.3.0 form (docs/ocsf.md)"
    )
)
class EventFormat(Enum):
    NATIVE = "NATIVE"
    OCSF = "OCSF"


@strawberry.enum
class ActorType(Enum):
    USER = "USER"
    SYSTEM = "SYSTEM"
    API_KEY = "API_KEY"


@strawberry.type
class Actor:
    type: ActorType
    id: str | None
    name: str | None
    email: str | None


@strawberry.type
class Target:
    type: str
    id: str | None
    name: str | None


@strawberry.type
class Location:
    city: str | None
    region: str | None
    country: str | None
    country_code: str | None
    latitude: float | None
    longitude: float | None


@strawberry.type
class Device:
    browser: str | None
    browser_version: str | None
    os: str | None
    os_version: str | None
    device: str | None


@strawberry.type
class AuditEvent:
    id: strawberry.ID
    occurred_at: datetime
    received_at: datetime
    action: str
    category: EventCategory
    actor: Actor
    targets: list[Target]
    ip_address: str | None
    user_agent: str | None
    location: Location | None
    device: Device | None
    metadata: JSON
    payload: JSON = strawberry.field(description="The whole stored event as one JSON object.")
    anomalies: list[str] = strawberry.field(
        description="Set at ingest on logins: NEW_COUNTRY, NEW_DEVICE, NEW_IP when this actor "
        "had never been seen with that value on a successful login in this workspace."
    )
    # (workspace, xid, seq): where the event sits in ingest order, for its leaf.
    position: strawberry.Private[integrity_resolvers.Position | None] = None

    @strawberry.field(description="The event's leaf in the workspace's tree; null until sealed.")  # type: ignore[untyped-decorator]
    async def leaf_index(self, info: Info) -> int | None:
        return await integrity_resolvers.leaf_index(info.context, self.position)

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="Against the latest checkpoint, or the one of that tree size; "
        "null until sealed."
    )
    async def inclusion_proof(
        self, info: Info, tree_size: int | None = None
    ) -> InclusionProof | None:
        proof = await integrity_resolvers.inclusion_proof(info.context, self.position, tree_size)
        return InclusionProof.from_model(proof) if proof else None

    @classmethod
    def from_payload_text(
        cls, text: str, position: integrity_resolvers.Position | None = None
    ) -> AuditEvent:
        event = cls.from_payload(orjson.loads(text))
        event.position = position
        return event

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> AuditEvent:
        actor = p["actor"]
        location = p.get("location")
        device = p.get("device")
        return cls(
            id=strawberry.ID(p["id"]),
            occurred_at=_stored_time(p["occurredAt"]),
            received_at=_stored_time(p["receivedAt"]),
            action=p["action"],
            category=_CATEGORIES[p["category"]],
            actor=Actor(
                type=_ACTOR_TYPES[actor["type"]],
                id=actor.get("id"),
                name=actor.get("name"),
                email=actor.get("email"),
            ),
            targets=[
                Target(type=t["type"], id=t.get("id"), name=t.get("name")) for t in p["targets"]
            ],
            ip_address=p.get("ipAddress"),
            user_agent=p.get("userAgent"),
            location=Location(
                city=location.get("city"),
                region=location.get("region"),
                country=location.get("country"),
                country_code=location.get("countryCode"),
                latitude=location.get("latitude"),
                longitude=location.get("longitude"),
            )
            if location
            else None,
            device=Device(
                browser=device.get("browser"),
                browser_version=device.get("browserVersion"),
                os=device.get("os"),
                os_version=device.get("osVersion"),
                device=device.get("device"),
            )
            if device
            else None,
            metadata=cast(JSON, p.get("metadata") or {}),
            payload=cast(JSON, p),
            anomalies=list(p.get("anomalies") or []),
        )


# Stored payloads were validated at ingest: their values are looked up, not checked again.
_CATEGORIES = {c.value: c for c in EventCategory}
_ACTOR_TYPES = {t.value: t for t in ActorType}


def _stored_time(text: str) -> datetime:
    """A stored payload's timestamp: canonical (UTC with a Z, as ingest writes it),
    which datetime.fromisoformat reads six times faster than parse_timestamp."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:  # not ISO as Python reads it: the strict parser decides
        return parse_timestamp(text)
    return parsed if parsed.tzinfo is UTC else parse_timestamp(text)


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class AuditEventEdge:
    cursor: str
    node: AuditEvent


@strawberry.type
class AuditEventConnection:
    edges: list[AuditEventEdge]
    page_info: PageInfo


@strawberry.type
class EventCatalogEntry:
    action: str
    category: EventCategory
    description: str

    @classmethod
    def from_entry(cls, entry: CatalogEntry) -> EventCatalogEntry:
        return cls(
            action=entry.action,
            category=EventCategory(entry.category.value),
            description=entry.description,
        )


@strawberry.type
class Workspace:
    id: strawberry.ID
    plan: Plan
    retention_days: int | None = strawberry.field(description="null = unlimited")

    @classmethod
    def from_row(cls, row: WorkspaceRow) -> Workspace:
        return cls(id=strawberry.ID(row.id), plan=Plan(row.plan), retention_days=row.retention_days)
