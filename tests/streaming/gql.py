"""GraphQL documents and helpers shared by the streaming tests."""

from __future__ import annotations

from typing import Any

from tests.conftest import WorkspaceKeys

FIELDS = """id name kind categories status config lastDeliveredAt lagEvents lastError createdAt"""

CREATE = f"""mutation($input: CreateStreamingDestinationInput!) {{
  createStreamingDestination(input: $input) {{ webhookSecret destination {{ {FIELDS} }} }}
}}"""
UPDATE = f"""mutation($id: ID!, $input: UpdateStreamingDestinationInput!) {{
  updateStreamingDestination(id: $id, input: $input) {{ {FIELDS} }}
}}"""
PAUSE = f"mutation($id: ID!) {{ pauseStreamingDestination(id: $id) {{ {FIELDS} }} }}"
RESUME = f"mutation($id: ID!) {{ resumeStreamingDestination(id: $id) {{ {FIELDS} }} }}"
REPLAY = f"""mutation($id: ID!, $from: DateTime!) {{
  replayStreamingDestination(id: $id, from: $from) {{ {FIELDS} }}
}}"""
DELETE = "mutation($id: ID!) { deleteStreamingDestination(id: $id) }"
TEST = """mutation($id: ID!) {
  testStreamingDestination(id: $id) { ok statusCode error latencyMs }
}"""
LIST = f"{{ streamingDestinations {{ {FIELDS} }} }}"


async def create_destination(
    ws: WorkspaceKeys, config: dict[str, Any], name: str = "siem", **extra: Any
) -> dict[str, Any]:
    body = await ws.gql(CREATE, {"input": {"name": name, "config": config, **extra}})
    assert "errors" not in body, body
    created: dict[str, Any] = body["data"]["createStreamingDestination"]
    return created


async def destination(ws: WorkspaceKeys, destination_id: str) -> dict[str, Any]:
    body = await ws.gql(LIST)
    assert "errors" not in body, body
    (found,) = [d for d in body["data"]["streamingDestinations"] if d["id"] == destination_id]
    return dict(found)


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("errors"), body
    first: dict[str, Any] = body["errors"][0]
    return first
