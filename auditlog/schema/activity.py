"""ActorActivity: an actor's distinct IP addresses, countries and devices."""

from __future__ import annotations

from datetime import datetime

import strawberry

from auditlog.storage.activity import SeenRow


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
    description="Where an actor has been seen, from every event of theirs in the range: "
    "IP addresses, countries (ISO codes) and devices ('browser / os / device'), "
    "the most recently seen first."
)
class ActorActivity:
    actor_email: str
    ip_addresses: list[SeenValue]
    countries: list[SeenValue]
    devices: list[SeenValue]

    @classmethod
    def from_rows(cls, actor_email: str, rows: list[SeenRow]) -> ActorActivity:
        def kind(name: str) -> list[SeenValue]:
            return [SeenValue.from_row(r) for r in rows if r.kind == name]

        return cls(
            actor_email=actor_email,
            ip_addresses=kind("ip"),
            countries=kind("country"),
            devices=kind("device"),
        )
