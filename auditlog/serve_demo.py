"""`serve --demo`: the ENTERPRISE workspace `demo`, an admin key, sample events."""

from __future__ import annotations

import contextlib

from auditlog import accounts
from auditlog.config import Settings
from auditlog.demo import DEMO_WORKSPACE, load_demo_events
from auditlog.errors import BadInputError
from auditlog.runtime import open_services


async def prepare_demo(settings: Settings) -> str:
    """Create the demo workspace (once), load its events (idempotent), return a new admin key."""
    async with open_services(settings, pool_size=4) as services:
        with contextlib.suppress(BadInputError):  # already there from an earlier run
            await accounts.create_workspace(services.pool, DEMO_WORKSPACE, "enterprise")
        await load_demo_events(services.ingestor)
        created = await accounts.create_key(
            services.pool,
            services.ingestor,
            workspace_id=DEMO_WORKSPACE,
            role="admin",
            name="demo admin",
        )
        return created.key
