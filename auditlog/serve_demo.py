"""`serve --demo`: the ENTERPRISE workspace `demo`, an admin key, sample events."""

from __future__ import annotations

import contextlib

from auditlog.config import Settings
from auditlog.demo import DEMO_WORKSPACE, load_demo_events
from auditlog.errors import BadInputError
from auditlog.runtime import open_services
from auditlog.services import keys as key_service
from auditlog.services import workspaces as workspace_service


async def prepare_demo(settings: Settings) -> str:
    """Create the demo workspace (once), load its events (idempotent), return a new admin key."""
    async with open_services(settings, pool_size=4) as services:
        with contextlib.suppress(BadInputError):  # already there from an earlier run
            await workspace_service.create_workspace(services.pool, DEMO_WORKSPACE, "enterprise")
        await load_demo_events(services.ingestor)
        created = await key_service.create_key(
            services.pool,
            services.ingestor,
            workspace_id=DEMO_WORKSPACE,
            role="admin",
            name="demo admin",
        )
        return created.key
