"""GraphQL inputs and their conversion to validated storage filters."""

from __future__ import annotations

import ipaddress
from datetime import datetime

import strawberry

from auditlog.catalog import expand_action_pattern
from auditlog.errors import BadInputError
from auditlog.model import EventFilter
from auditlog.schema.types import EventCategory

MAX_FILTER_VALUES = 100


@strawberry.input
class AuditEventFilter:
    occurred_from: datetime | None = strawberry.field(default=None, description="inclusive")
    occurred_to: datetime | None = strawberry.field(default=None, description="exclusive")
    actor_email: str | None = strawberry.field(
        default=None, description="case-insensitive exact match"
    )
    actor_id: str | None = None
    categories: list[EventCategory] | None = None
    actions: list[str] | None = strawberry.field(
        default=None, description='exact, or a prefix ending in ".*" such as "user.login.*"'
    )
    ip_address: str | None = strawberry.field(
        default=None, description='one address, or a CIDR block such as "10.0.0.0/8"'
    )
    target_id: str | None = None

    def to_filter(self, argument: str = "filter") -> EventFilter:
        """Validate and convert; BadInputError names the offending argument."""
        if (
            self.occurred_from is not None
            and self.occurred_to is not None
            and self.occurred_from >= self.occurred_to
        ):
            raise BadInputError(f"{argument}.occurredTo", "must be later than occurredFrom")
        actions: list[str] | None = None
        if self.actions is not None:
            if len(self.actions) > MAX_FILTER_VALUES:
                raise BadInputError(f"{argument}.actions", f"at most {MAX_FILTER_VALUES} values")
            expanded: set[str] = set()
            for pattern in self.actions:
                try:
                    expanded.update(expand_action_pattern(pattern))
                except ValueError as exc:
                    raise BadInputError(f"{argument}.actions", str(exc)) from None
            actions = sorted(expanded)
        network = None
        if self.ip_address is not None:
            try:
                network = ipaddress.ip_network(self.ip_address.strip(), strict=False)
            except ValueError:
                raise BadInputError(
                    f"{argument}.ipAddress", "must be an IP address or a CIDR block"
                ) from None
        email = self.actor_email.strip().lower() if self.actor_email is not None else None
        return EventFilter(
            occurred_from=self.occurred_from,
            occurred_to=self.occurred_to,
            actor_email=email,
            actor_id=self.actor_id,
            categories=sorted({c.value for c in self.categories})
            if self.categories is not None
            else None,
            actions=actions,
            ip_network=network,
            target_id=self.target_id,
        )
