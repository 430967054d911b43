"""Who may read, what another workspace sees (nothing), event detail, the catalog,
bad filter values, and the limits on query size."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from gql import Client, gql
from gql.transport.httpx import HTTPXAsyncTransport

from auditlog.catalog import CATALOG
from auditlog.runtime import Services
from auditlog.services import workspaces as workspace_service
from tests.conftest import WorkspaceKeys, create_workspace_keys, event

DETAIL = """query($id: ID!) { auditEvent(id: $id) { id action category payload metadata
  actor { type id name email } targets { type id name } ipAddress userAgent
  location { city region country countryCode latitude longitude }
  device { browser browserVersion os osVersion device } anomalies occurredAt receivedAt } }"""
LIST = (
    "query($f: AuditEventFilter) { auditEvents(filter: $f, first: 500) { edges { node { id } } } }"
)


async def test_member_and_ingest_keys_are_forbidden_everywhere(workspace: WorkspaceKeys) -> None:
    queries = [
        "{ auditEvents { edges { cursor } } }",
        '{ auditEvent(id: "0193b1c4-0000-7000-8000-000000000000") { id } }',
        '{ actorActivity(actorEmail: "a@b.c") { actorEmail } }',
    ]
    for key in (workspace.member, workspace.ingest_key):
        for query in queries:
            body = await workspace.gql(query, key=key)
            assert not any((body["data"] or {}).values()), body
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
    for key in (workspace.owner, workspace.admin):
        body = await workspace.gql("{ workspace { id plan retentionDays } }", key=key)
        assert body["data"]["workspace"] == {
            "id": workspace.id,
            "plan": "ENTERPRISE",
            "retentionDays": None,
        }


async def test_event_detail_has_the_whole_payload(workspace: WorkspaceKeys) -> None:
    sent = event(
        "file.share.created",
        metadata={"shareWith": "bob@acme.io", "nested": {"n": [1, 2]}},
        ipAddress="89.160.20.112",
    )
    assert (await workspace.ingest([sent])).status_code == 202
    body = await workspace.gql(DETAIL, {"id": sent["id"]})
    node = body["data"]["auditEvent"]
    assert node["id"] == sent["id"]
    assert node["category"] == "DATA"
    assert node["metadata"] == sent["metadata"]
    assert node["location"]["countryCode"] == "SE"
    assert node["device"]["browser"] == "Firefox"
    payload = node["payload"]
    assert payload["id"] == sent["id"] and payload["workspaceId"] == workspace.id
    assert payload["actor"] == sent["actor"] and payload["targets"] == sent["targets"]
    assert payload["location"]["city"] == node["location"]["city"]
    assert payload["occurredAt"] == node["occurredAt"] and payload["anomalies"] == []


async def test_another_workspace_sees_nothing(workspace: WorkspaceKeys, services: Services) -> None:
    other = await create_workspace_keys(services, workspace.http)
    mine = event("ai.workflow.deleted", actor={"type": "USER", "id": "zed", "email": "z@x.io"})
    assert (await workspace.ingest([mine])).status_code == 202
    detail = await other.gql(DETAIL, {"id": mine["id"]})
    assert detail == {"data": {"auditEvent": None}}
    listed = await other.gql(LIST, {"f": {"actorEmail": "z@x.io"}})
    assert listed["data"]["auditEvents"]["edges"] == []
    everything = await other.gql(LIST)
    assert mine["id"] not in {e["node"]["id"] for e in everything["data"]["auditEvents"]["edges"]}
    assert (await workspace.gql(DETAIL, {"id": mine["id"]}))["data"]["auditEvent"]["id"]


async def test_unknown_or_malformed_event_id_is_simply_not_found(workspace: WorkspaceKeys) -> None:
    for event_id in ("0193b1c4-0000-7000-8000-000000000000", "not-a-uuid"):
        assert await workspace.gql(DETAIL, {"id": event_id}) == {"data": {"auditEvent": None}}


async def test_event_catalog_lists_every_action(workspace: WorkspaceKeys) -> None:
    body = await workspace.gql("{ eventCatalog { action category description } }")
    entries = body["data"]["eventCatalog"]
    assert [(e["action"], e["category"]) for e in entries] == [
        (c.action, c.category.value) for c in CATALOG
    ]
    assert all(e["description"] for e in entries)


async def assert_bad_filter(ws: WorkspaceKeys, flt: dict[str, Any], argument: str) -> None:
    body = await ws.gql(LIST, {"f": flt})
    assert body["data"] is None, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", (flt, error)
    assert error["extensions"]["argument"].startswith(argument), (flt, error)
    assert argument.split(".")[0] in error["message"], error


async def test_invalid_filter_values_name_the_argument(workspace: WorkspaceKeys) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ipAddress": "10.0.0.0/33"}, "filter.ipAddress"),
        ({"ipAddress": "999.1.1.1"}, "filter.ipAddress"),
        ({"ipAddress": "not an address"}, "filter.ipAddress"),
        (
            {"occurredFrom": "2026-01-02T00:00:00Z", "occurredTo": "2026-01-01T00:00:00Z"},
            "filter.occurredTo",
        ),
        (
            {"occurredFrom": "2026-01-01T00:00:00Z", "occurredTo": "2026-01-01T00:00:00Z"},
            "filter.occurredTo",
        ),
        ({"actions": ["user.login*"]}, "filter.actions"),
        ({"actions": ["User.Login.*"]}, "filter.actions"),
        ({"actions": ["*"]}, "filter.actions"),
        ({"actions": ["user.teleported"]}, "filter.actions"),
        ({"actions": ["nothing.here.*"]}, "filter.actions"),
        ({"actions": ["file.uploaded"] * 101}, "filter.actions"),
        ({"categories": ["SPACESHIPS"]}, "filter"),
        ({"occurredFrom": "last tuesday"}, "filter"),
        ({"occurredFrom": "2026-01-01T00:00:00"}, "filter"),  # no time zone
    ]
    for flt, argument in cases:
        await assert_bad_filter(workspace, flt, argument)


async def test_invalid_inline_values_name_the_argument(workspace: WorkspaceKeys) -> None:
    for literal, argument in (
        ("filter: {categories: [SPACESHIPS]}", "filter.categories"),
        ('filter: {colour: "red"}', "filter.colour"),
        ('first: "ten"', "first"),
    ):
        body = await workspace.gql(f"{{ auditEvents({literal}) {{ edges {{ cursor }} }} }}")
        (error,) = body["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": argument}, error
        assert error["message"].startswith(argument)


FULL_NODE = """id occurredAt receivedAt action category actor { type id name email }
  targets { type id name } ipAddress userAgent
  location { city region country countryCode latitude longitude }
  device { browser browserVersion os osVersion device } metadata payload anomalies"""


async def too_complex(ws: WorkspaceKeys, query: str) -> str:
    started = time.perf_counter()
    response = await ws.http.post(
        "/graphql",
        content=orjson.dumps({"query": query}),
        headers={**ws.auth(ws.admin), "Content-Type": "application/json"},
    )
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"refusal took {elapsed:.3f} s"
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("data") is None, body
    refusals = [e for e in body["errors"] if e["extensions"]["code"] == "QUERY_TOO_COMPLEX"]
    assert refusals, body
    message: str = refusals[0]["message"]
    return message


async def test_limits_refuse_depth_aliases_cost_and_size_before_any_work(
    workspace: WorkspaceKeys,
) -> None:
    deep = "{ auditEvents { edges { node { actor { " + "a { " * 8 + "b" + " }" * 12 + " }"
    assert "deeper" in await too_complex(workspace, deep)
    aliases = "{ " + " ".join(f"a{i}: workspace {{ id }}" for i in range(21)) + " }"
    assert "aliases" in await too_complex(workspace, aliases)
    wide = "{ " + " ".join(
        f"p{i}: auditEvents(first: 500) {{ edges {{ node {{ {FULL_NODE} }} }} }}" for i in range(3)
    )
    assert "values" in await too_complex(workspace, wide + " }")
    variable_pages = (
        "query($n: Int) { "
        + " ".join(
            f"p{i}: auditEvents(first: $n) {{ edges {{ node {{ {FULL_NODE} }} }} }}"
            for i in range(3)
        )
        + " }"
    )
    assert "values" in await too_complex(workspace, variable_pages)
    # Fragments are counted every time they are spread.
    bomb = "fragment F0 on Workspace { id plan retentionDays }\n"
    for level in range(1, 20):
        bomb += f"fragment F{level} on Workspace {{ ...F{level - 1} ...F{level - 1} }}\n"
    assert "values" in await too_complex(workspace, "{ workspace { ...F19 } }\n" + bomb)
    huge = "{ workspace { " + "id " * 6000 + "} }"
    assert "tokens" in await too_complex(workspace, huge)


async def test_clients_that_introspect_first_work(workspace: WorkspaceKeys) -> None:
    """gql with fetch_schema_from_transport (as GraphiQL and code generators do)
    sends graphql-core's whole introspection query, its `ofType` chains nested
    deeper than the depth limit: it is answered, and the client then validates
    and runs queries against the fetched schema. Deep nesting through the
    introspection types themselves is still refused."""
    transport = HTTPXAsyncTransport(
        url=str(workspace.http.base_url).rstrip("/") + "/graphql",
        headers=workspace.auth(workspace.admin),
    )
    client = Client(transport=transport, fetch_schema_from_transport=True)
    async with client as session:
        result = await session.execute(gql("{ workspace { id plan } }"))
        assert client.schema is not None
        assert client.schema.get_type("AuditEventFilter") is not None
    assert result["workspace"]["id"] == workspace.id
    deep = "{ __schema { types { fields { type { fields { type { fields { type { fields {"
    deep += " type { fields { name } } } } } } } } } } } }"
    assert "deeper" in await too_complex(workspace, deep)


async def test_a_full_page_of_500_with_every_field_is_allowed(workspace: WorkspaceKeys) -> None:
    assert (await workspace.ingest([event() for _ in range(3)])).status_code == 202
    body = await workspace.gql(
        f"{{ auditEvents(first: 500) {{ edges {{ node {{ {FULL_NODE} }} }} }} }}"
    )
    assert "errors" not in body, body
    assert len(body["data"]["auditEvents"]["edges"]) >= 3


async def test_an_oversized_request_body_is_refused_unread(workspace: WorkspaceKeys) -> None:
    body = orjson.dumps({"query": "{ workspace { id } }", "variables": {"x": "y" * 1_100_000}})
    response = await workspace.http.post(
        "/graphql",
        content=body,
        headers={**workspace.auth(workspace.admin), "Content-Type": "application/json"},
    )
    assert response.status_code == 413


async def test_events_past_retention_are_never_returned(
    workspace: WorkspaceKeys, services: Services
) -> None:
    old = event("file.deleted", occurredAt=(datetime.now(UTC) - timedelta(days=10)).isoformat())
    recent = event("file.deleted")
    assert (await workspace.ingest([old, recent])).status_code == 202
    query = {"f": {"actions": ["file.deleted"]}}
    listed = await workspace.gql(LIST, query)
    assert {e["node"]["id"] for e in listed["data"]["auditEvents"]["edges"]} == {
        old["id"],
        recent["id"],
    }
    await workspace_service.set_plan(services.pool, workspace.id, "enterprise", 5)
    listed = await workspace.gql(LIST, query)
    assert [e["node"]["id"] for e in listed["data"]["auditEvents"]["edges"]] == [recent["id"]]
    assert (await workspace.gql(DETAIL, {"id": old["id"]}))["data"]["auditEvent"] is None
