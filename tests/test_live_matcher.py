"""The live tail's Python filter selects exactly what the SQL filter selects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from auditlog.schema.inputs import AuditEventFilter
from auditlog.schema.types import EventCategory
from auditlog.storage.events import read_events_page
from auditlog.storage.live import read_live_events
from auditlog.streaming.matcher import EventMatcher
from tests.conftest import RunningService, WorkspaceKeys, event
from tests.test_live import ingest


async def test_python_matcher_agrees_with_sql_for_every_filter(
    service: RunningService, workspace: WorkspaceKeys
) -> None:
    now = datetime.now(UTC)
    bob = {"type": "USER", "id": "u_2", "name": "Bob", "email": "Bob@Acme.io"}
    await ingest(
        workspace,
        [
            event(),
            event("user.login.failed", ipAddress="10.1.2.3"),
            event("file.uploaded", actor=bob, ipAddress="2001:db8::1"),
            event("file.deleted", targets=[{"type": "file", "id": "f_1"}], ipAddress=None),
            event("ai.workflow.created", occurredAt=(now - timedelta(hours=2)).isoformat()),
            event("folder.created", actor={"type": "SYSTEM"}, targets=[]),
        ],
    )
    filters = [
        AuditEventFilter(),
        AuditEventFilter(actor_email="BOB@acme.IO"),
        AuditEventFilter(actor_id="u_1"),
        AuditEventFilter(categories=[EventCategory.DATA, EventCategory.AI]),
        AuditEventFilter(actions=["user.login.*", "folder.created"]),
        AuditEventFilter(ip_address="10.0.0.0/8"),
        AuditEventFilter(ip_address="81.2.69.142"),
        AuditEventFilter(ip_address="2001:db8::/32"),
        AuditEventFilter(ip_address="::/0"),
        AuditEventFilter(target_id="f_9"),
        AuditEventFilter(occurred_from=now - timedelta(hours=1)),
        AuditEventFilter(occurred_to=now - timedelta(hours=1)),
        AuditEventFilter(actions=["file.*"], target_id="f_1"),
    ]
    async with service.services.pool.acquire() as conn:
        rows = await read_live_events(
            conn, workspace.id, after=(0, 0), limit=500, retention_start=None
        )
        assert len(rows) >= 6
        for graphql_filter in filters:
            flt = graphql_filter.to_filter()
            in_sql = await read_events_page(conn, workspace.id, flt, limit=500)
            matcher = EventMatcher(flt)
            in_python = [r for r in rows if matcher.matches(r)]
            assert {r.seq for r in in_python} == {r.seq for r in in_sql}, graphql_filter
    retention = now - timedelta(hours=1)
    assert not EventMatcher(AuditEventFilter().to_filter()).matches(
        next(r for r in rows if r.action == "ai.workflow.created"), retention
    )
