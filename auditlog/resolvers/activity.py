"""actorActivity: one query for "where has this account been seen from"."""

from __future__ import annotations

from datetime import UTC, datetime

from auditlog.errors import BadInputError
from auditlog.resolvers.events import read_workspace_or_fail
from auditlog.schema.activity import ActorActivity
from auditlog.schema.context import Context
from auditlog.storage.activity import read_actor_activity

MAX_EMAIL = 320


async def actor_activity(
    ctx: Context, actor_email: str, occurred_from: datetime | None, occurred_to: datetime | None
) -> ActorActivity:
    workspace_id = ctx.reader_workspace()
    email = actor_email.strip().lower()
    if not email or len(email) > MAX_EMAIL:
        raise BadInputError(
            "actorEmail", f"must be an email address of 1 to {MAX_EMAIL} characters"
        )
    if occurred_from is not None and occurred_to is not None and occurred_from >= occurred_to:
        raise BadInputError("occurredTo", "must be later than occurredFrom")
    async with ctx.services.read_pool().acquire() as conn:
        workspace = await read_workspace_or_fail(conn, workspace_id)
        retention = workspace.retention_start(datetime.now(UTC))
        if retention is not None and (occurred_from is None or occurred_from < retention):
            occurred_from = retention
        rows = await read_actor_activity(conn, workspace_id, email, occurred_from, occurred_to)
    return ActorActivity.from_rows(email, rows)
