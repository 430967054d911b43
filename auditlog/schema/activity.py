"""ActorActivity: an actor's distinct IP addresses, countries and devices."""

from __future__ import annotations

from datetime import datetime

import strawberry

from auditlog.model import ACTIVITY_MAX_EVENTS, ActivityRows, SeenRow


@strawberry.type
class SeenValue:
    value: str
    count: int
    first_seen: datetime
    last_seen: datetime

    @classmethod
    def from_row(cls, row: SeenRow) -> SeenValue:
        return cls(
            value=row.value, count=row.count, first_seen=row.first_seen, last_seen=row.last_seen
        )


@strawberry.type(
    description="Where an actor has been seen, from their events in the range (the newest "
    f"{ACTIVITY_MAX_EVENTS} at most, see truncated): IP addresses, countries (ISO codes) and "
    "devices ('browser / os / device'), the most recently seen first."
)
class ActorActivity:
    actor_email: str
    ip_addresses: list[SeenValue]
    countries: list[SeenValue]
    devices: list[SeenValue]
    truncated: bool = strawberry.field(
        description=f"the range holds more than {ACTIVITY_MAX_EVENTS} events of this actor: the "
        "values are those of the newest; set occurredTo to look further back"
    )

    @classmethod
    def from_rows(cls, actor_email: str, result: ActivityRows) -> ActorActivity:
        def kind(name: str) -> list[SeenValue]:
            return [SeenValue.from_row(r) for r in result.rows if r.kind == name]

        return cls(
            actor_email=actor_email,
            ip_addresses=kind("ip"),
            countries=kind("country"),
            devices=kind("device"),
            truncated=result.truncated,
        )
