"""An EventFilter applied in Python, with exactly the meaning of its SQL form.

`storage.events.filter_sql` is the reference; tests run both on the same rows
and compare. NULL columns never match, as in SQL.
"""

from __future__ import annotations

from datetime import datetime

from auditlog.model import EventFilter
from auditlog.storage.live import LiveEvent


def filter_key(flt: EventFilter) -> tuple[object, ...]:
    """Equal keys for filters that select the same events (they are evaluated once)."""
    return (
        flt.occurred_from,
        flt.occurred_to,
        flt.actor_email,
        flt.actor_id,
        tuple(flt.categories) if flt.categories is not None else None,
        tuple(flt.actions) if flt.actions is not None else None,
        flt.ip_network,
        flt.target_id,
    )


class EventMatcher:
    """A filter compiled once: sets for list conditions, the network for IPs."""

    __slots__ = ("_actions", "_categories", "filter")

    def __init__(self, flt: EventFilter) -> None:
        self.filter = flt
        self._categories = frozenset(flt.categories) if flt.categories is not None else None
        self._actions = frozenset(flt.actions) if flt.actions is not None else None

    def matches(self, event: LiveEvent, retention_start: datetime | None = None) -> bool:
        flt = self.filter
        if retention_start is not None and event.occurred_at < retention_start:
            return False
        if flt.occurred_from is not None and event.occurred_at < flt.occurred_from:
            return False
        if flt.occurred_to is not None and event.occurred_at >= flt.occurred_to:
            return False
        if flt.actor_email is not None and event.actor_email != flt.actor_email:
            return False
        if flt.actor_id is not None and event.actor_id != flt.actor_id:
            return False
        if self._categories is not None and event.category not in self._categories:
            return False
        if self._actions is not None and event.action not in self._actions:
            return False
        if flt.ip_network is not None:
            ip = event.ip
            # inet <<= cidr is false across address families, as `in` is here.
            if ip is None or ip.version != flt.ip_network.version or ip not in flt.ip_network:
                return False
        return flt.target_id is None or flt.target_id in event.target_ids
