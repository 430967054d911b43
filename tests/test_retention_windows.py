"""Each plan's retention window, at ingest and in every read, from the moment it changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from auditlog.runtime import Services
from auditlog.services import workspaces as workspace_service
from tests.conftest import WorkspaceKeys, create_workspace_keys, event

EVENTS_QUERY = "{ auditEvents(first: 500) { edges { node { id occurredAt } } } }"
ONE_EVENT = "query($id: ID!) { auditEvent(id: $id) { id } }"
WORKSPACE_QUERY = "{ workspace { id plan retentionDays } }"


def days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    ("plan", "custom_days", "window"),
    [
        ("early_access", None, 90),
        ("professional", None, 365),
        ("enterprise", 30, 30),
    ],
)
async def test_ingest_refuses_events_older_than_the_plans_window(
    services: Services,
    http: httpx.AsyncClient,
    plan: str,
    custom_days: int | None,
    window: int,
) -> None:
    ws = await create_workspace_keys(services, http, plan, retention_days=custom_days)
    inside = await ws.ingest([event(occurredAt=days_ago(window - 1))])
    assert inside.status_code == 202, inside.text
    outside = await ws.ingest([event(occurredAt=days_ago(window + 1)), event()])
    assert outside.status_code == 422
    (error,) = outside.json()["errors"]
    assert error["index"] == 0
    assert error["field"] == "occurredAt"
    assert f"retention of {window} days" in error["message"]


async def test_unlimited_enterprise_accepts_any_age(workspace: WorkspaceKeys) -> None:
    response = await workspace.ingest([event(occurredAt=days_ago(3650))])
    assert response.status_code == 202, response.text


async def visible_ids(ws: WorkspaceKeys) -> set[str]:
    body = await ws.gql(EVENTS_QUERY)
    return {edge["node"]["id"] for edge in body["data"]["auditEvents"]["edges"]}


async def plan_of(ws: WorkspaceKeys) -> dict[str, Any]:
    body = await ws.gql(WORKSPACE_QUERY)
    workspace: dict[str, Any] = body["data"]["workspace"]
    return workspace


async def test_queries_follow_the_plan_at_once(
    services: Services, workspace: WorkspaceKeys
) -> None:
    ages = {"d30": 30, "d200": 200, "d400": 400}
    events = {name: event(occurredAt=days_ago(age)) for name, age in ages.items()}
    assert (await workspace.ingest(list(events.values()))).status_code == 202
    ids = {name: body["id"] for name, body in events.items()}
    assert {ids["d30"], ids["d200"], ids["d400"]} <= await visible_ids(workspace)

    expected = [
        ("professional", None, {"d30", "d200"}, 365),
        ("early_access", None, {"d30"}, 90),
        ("enterprise", 250, {"d30", "d200"}, 250),
        # An upgrade shows again whatever the purge has not removed yet.
        ("enterprise", None, {"d30", "d200", "d400"}, None),
    ]
    for plan, custom, names, days in expected:
        await workspace_service.set_plan(services.pool, workspace.id, plan, custom)
        assert await plan_of(workspace) == {
            "id": workspace.id,
            "plan": plan.upper(),
            "retentionDays": days,
        }
        visible = await visible_ids(workspace)
        assert {n for n, i in ids.items() if i in visible} == names, plan
        for name, event_id in ids.items():
            found = (await workspace.gql(ONE_EVENT, {"id": event_id}))["data"]["auditEvent"]
            assert (found is not None) == (name in names), (plan, name)


async def test_time_filters_cannot_reach_past_retention(
    services: Services, http: httpx.AsyncClient
) -> None:
    ws = await create_workspace_keys(services, http, "professional")
    old, recent = event(occurredAt=days_ago(300)), event(occurredAt=days_ago(5))
    assert (await ws.ingest([old, recent])).status_code == 202
    await workspace_service.set_plan(services.pool, ws.id, "early_access")
    body = await ws.gql(
        """query($from: DateTime!) {
               auditEvents(filter: {occurredFrom: $from, actions: ["user.login.*"]}) {
                   edges { node { id } } } }""",
        {"from": days_ago(1000)},
    )
    assert [e["node"]["id"] for e in body["data"]["auditEvents"]["edges"]] == [recent["id"]]
