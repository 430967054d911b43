"""Managing streaming destinations through GraphQL: who may, what is refused, what is shown."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from auditlog.errors import BadInputError
from auditlog.model import Principal, Role
from auditlog.runtime import Services
from auditlog.services.streams import Caller, StreamingAdmin
from auditlog.streaming.config import SplunkHecConfig, WebhookConfig
from auditlog.streaming.netguard import DestinationRefused, GuardedClient, NetworkPolicy
from tests.conftest import WorkspaceKeys, create_workspace_keys, make_settings
from tests.streaming.gql import (
    CREATE,
    DELETE,
    LIST,
    PAUSE,
    RESUME,
    TEST,
    UPDATE,
    create_destination,
    destination,
    error_of,
)
from tests.streaming.receivers import Receiver


async def test_webhook_secret_is_generated_and_shown_only_at_creation(
    workspace: WorkspaceKeys, receiver: Receiver
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/hook"}})
    secret = created["webhookSecret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    dest = created["destination"]
    assert dest["kind"] == "WEBHOOK" and dest["status"] == "ACTIVE"
    assert dest["categories"] == ["AI", "AUTHENTICATION", "COMMUNICATION", "DATA", "WORKSPACE"]
    assert dest["config"] == {"url": receiver.url + "/hook", "secret": "********"}
    assert dest["lastDeliveredAt"] is None and dest["lastError"] is None
    listed = await workspace.http.post(
        "/graphql", json={"query": LIST}, headers=workspace.auth(workspace.admin)
    )
    assert secret not in listed.text and secret.removeprefix("whsec_") not in listed.text


async def test_credentials_are_never_returned_nor_stored_in_clear(
    workspace: WorkspaceKeys, services: Services
) -> None:
    token, api_key, aws_secret = "splunk-token-0123456789", "dd-key-abcdef0123", "aws/SECRET+key"
    configs = [
        {"splunkHec": {"url": "https://splunk.example.com:8088", "token": token}},
        {"datadog": {"site": "datadoghq.eu", "apiKey": api_key, "tags": ["env:prod"]}},
        {
            "s3": {
                "bucket": "audit-bucket",
                "region": "eu-west-1",
                "accessKeyId": "AKIDEXAMPLE",
                "secretAccessKey": aws_secret,
            }
        },
    ]
    texts = []
    for config in configs:
        response = await workspace.http.post(
            "/graphql",
            json={"query": CREATE, "variables": {"input": {"name": "x", "config": config}}},
            headers=workspace.auth(workspace.owner),
        )
        texts.append(response.text)
        assert "errors" not in response.json(), response.text
    texts.append(
        (
            await workspace.http.post(
                "/graphql", json={"query": LIST}, headers=workspace.auth(workspace.owner)
            )
        ).text
    )
    for secret in (token, api_key, aws_secret):
        assert all(secret not in text for text in texts)
    body = await workspace.gql(LIST)
    configs_shown = {d["kind"]: d["config"] for d in body["data"]["streamingDestinations"]}
    assert configs_shown["SPLUNK_HEC"]["token"] == "********"
    assert configs_shown["DATADOG"] == {
        "site": "datadoghq.eu",
        "apiKey": "********",
        "service": None,
        "tags": ["env:prod"],
        "endpointUrl": None,
    }
    assert configs_shown["S3"]["secretAccessKey"] == "********"
    async with services.pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT config::text AS c, secrets FROM stream_destinations WHERE workspace_id = $1",
            workspace.id,
        )
    for row in stored:
        for secret in (token, api_key, aws_secret):
            assert secret not in row["c"] and secret.encode() not in bytes(row["secrets"])


@pytest.mark.parametrize(
    ("config", "argument"),
    [
        ({"webhook": {"url": "not a url"}}, "input.config.webhook.url"),
        ({"webhook": {"url": "ftp://example.com/x"}}, "input.config.webhook.url"),
        (
            {"webhook": {"url": "https://x.example", "secret": "short"}},
            "input.config.webhook.secret",
        ),
        ({"datadog": {"site": "datadoghq.moon", "apiKey": "k"}}, "input.config.datadog.site"),
        ({"splunkHec": {"url": "https://h.example", "token": " "}}, "input.config.splunkHec.token"),
        (
            {
                "s3": {
                    "bucket": "",
                    "region": "eu-west-1",
                    "accessKeyId": "a",
                    "secretAccessKey": "s",
                }
            },
            "input.config.s3.bucket",
        ),
        (
            {
                "s3": {
                    "bucket": "ok-bucket",
                    "region": "mars",
                    "accessKeyId": "a",
                    "secretAccessKey": "s",
                }
            },
            "input.config.s3.region",
        ),
    ],
)
async def test_invalid_config_is_refused_naming_the_field(
    workspace: WorkspaceKeys, config: dict[str, object], argument: str
) -> None:
    body = await workspace.gql(CREATE, {"input": {"name": "bad", "config": config}})
    error = error_of(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == argument
    assert (await workspace.gql(LIST))["data"]["streamingDestinations"] == []


async def test_config_must_name_exactly_one_kind(workspace: WorkspaceKeys) -> None:
    both = {
        "webhook": {"url": "https://a.example"},
        "splunkHec": {"url": "https://b", "token": "t"},
    }
    body = await workspace.gql(CREATE, {"input": {"name": "two", "config": both}})
    assert "exactly one" in error_of(body)["message"]
    body = await workspace.gql(CREATE, {"input": {"name": "none", "config": {}}})
    assert error_of(body)


async def test_member_and_non_enterprise_are_forbidden_with_the_reason(
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient
) -> None:
    body = await workspace.gql(LIST, key=workspace.member)
    assert error_of(body)["extensions"]["code"] == "FORBIDDEN"
    pro = await create_workspace_keys(services, http, plan="professional")
    for query, variables in (
        (LIST, {}),
        (CREATE, {"input": {"name": "x", "config": {"webhook": {"url": "https://a.example"}}}}),
    ):
        error = error_of(await pro.gql(query, variables))
        assert error["extensions"]["code"] == "FORBIDDEN"
        assert "ENTERPRISE" in error["message"]


async def test_each_change_is_audited_and_pause_resume_update_delete_work(
    workspace: WorkspaceKeys, receiver: Receiver
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/a"}})
    dest_id = created["destination"]["id"]
    paused = (await workspace.gql(PAUSE, {"id": dest_id}))["data"]["pauseStreamingDestination"]
    assert paused["status"] == "PAUSED"
    resumed = (await workspace.gql(RESUME, {"id": dest_id}))["data"]
    assert resumed["resumeStreamingDestination"]["status"] == "ACTIVE"
    updated = await workspace.gql(
        UPDATE,
        {
            "id": dest_id,
            "input": {
                "name": "renamed",
                "categories": ["DATA"],
                "config": {"webhook": {"url": receiver.url + "/b"}},
            },
        },
    )
    dest = updated["data"]["updateStreamingDestination"]
    assert dest["name"] == "renamed" and dest["categories"] == ["DATA"]
    assert dest["config"]["url"] == receiver.url + "/b"
    wrong_kind = await workspace.gql(
        UPDATE,
        {"id": dest_id, "input": {"config": {"splunkHec": {"url": receiver.url, "token": "t"}}}},
    )
    assert error_of(wrong_kind)["extensions"]["argument"] == "input.config"
    assert (await workspace.gql(DELETE, {"id": dest_id}))["data"]["deleteStreamingDestination"]
    gone = await workspace.gql(DELETE, {"id": dest_id})
    assert error_of(gone)["extensions"]["code"] == "NOT_FOUND"
    events = await workspace.gql(
        '{ auditEvents(filter: {actions: ["audit_log.stream.*"]}, first: 10) '
        "{ edges { node { action actor { type id } targets { id } } } } }"
    )
    actions = [e["node"]["action"] for e in events["data"]["auditEvents"]["edges"]]
    assert actions == [
        "audit_log.stream.deleted",
        "audit_log.stream.updated",
        "audit_log.stream.updated",
        "audit_log.stream.updated",
        "audit_log.stream.created",
    ]
    nodes = [e["node"] for e in events["data"]["auditEvents"]["edges"]]
    assert all(n["actor"]["type"] == "API_KEY" and n["targets"][0]["id"] == dest_id for n in nodes)


async def test_other_workspaces_destinations_are_invisible(
    workspace: WorkspaceKeys, services: Services, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url}})
    other = await create_workspace_keys(services, http)
    assert (await other.gql(LIST))["data"]["streamingDestinations"] == []
    dest_id = created["destination"]["id"]
    for query in (PAUSE, DELETE, TEST):
        assert (
            error_of(await other.gql(query, {"id": dest_id}))["extensions"]["code"] == "NOT_FOUND"
        )
    assert (await destination(workspace, dest_id))["status"] == "ACTIVE"


async def test_test_mutation_sends_one_event_now_and_reports(
    workspace: WorkspaceKeys, receiver: Receiver
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/t"}})
    dest_id = created["destination"]["id"]
    result = (await workspace.gql(TEST, {"id": dest_id}))["data"]["testStreamingDestination"]
    assert result["ok"] is True and result["statusCode"] == 200 and result["error"] is None
    assert result["latencyMs"] > 0
    (request,) = receiver.requests
    assert b'"audit_log.stream.test"' in request.body
    receiver.status = 401
    result = (await workspace.gql(TEST, {"id": dest_id}))["data"]["testStreamingDestination"]
    assert result["ok"] is False and result["statusCode"] == 401
    assert result["error"].startswith("HTTP 401")


# SSRF: built with allow_private_destinations=False, as in production.


@pytest.fixture
async def strict_admin(services: Services, tmp_path: Path) -> StreamingAdmin:
    settings = make_settings(services.database_url, tmp_path, allow_private_destinations=False)
    return StreamingAdmin(services.pool, services.ingestor, settings)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:192.168.0.1]/hook",
        "https://[64:ff9b::a9fe:a9fe]/latest/meta-data",
        "https://[::127.0.0.1]/hook",
    ],
)
async def test_internal_destinations_are_refused_without_the_flag(
    strict_admin: StreamingAdmin, workspace: WorkspaceKeys, url: str
) -> None:
    caller = Caller(workspace.id, Principal(workspace.id, Role.ADMIN, key_id="k").as_actor())
    with pytest.raises(BadInputError) as refused:
        await strict_admin.create(caller, "x", None, WebhookConfig(url=url))
    assert refused.value.argument == "input.config.webhook.url"
    with pytest.raises(BadInputError):
        await strict_admin.create(caller, "x", None, SplunkHecConfig(url=url, token="t"))


async def test_the_address_connected_to_is_checked_not_only_the_name(receiver: Receiver) -> None:
    """A name that resolves to loopback at send time is refused before any connection."""
    client = GuardedClient(NetworkPolicy(allow_private=False), timeout=2)
    port = receiver.url.rsplit(":", 1)[1]
    try:
        with pytest.raises(DestinationRefused):
            await client.post(f"https://localhost:{port}/hook", b"{}", {})
        with pytest.raises(DestinationRefused):
            await client.post(f"http://localhost:{port}/hook", b"{}", {})
    finally:
        await client.aclose()
    assert receiver.requests == []


async def test_redirects_are_not_followed(workspace: WorkspaceKeys, receiver: Receiver) -> None:
    receiver.status = 307
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/r"}})
    result = await workspace.gql(TEST, {"id": created["destination"]["id"]})
    report = result["data"]["testStreamingDestination"]
    assert report["ok"] is False and "redirects are not followed" in report["error"]


async def test_endless_garbage_answer_is_cut_short(
    workspace: WorkspaceKeys, receiver: Receiver
) -> None:
    receiver.endless = True
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/g"}})
    result = await workspace.gql(TEST, {"id": created["destination"]["id"]})
    report = result["data"]["testStreamingDestination"]
    assert report["ok"] is False and report["statusCode"] == 500
    assert report["error"].startswith("HTTP 500") and len(report["error"]) <= 300
