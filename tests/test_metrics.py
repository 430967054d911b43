"""GET /metrics and request ids, through real HTTP against the real service.

The service here runs in the test process, whose prometheus-client registry
every service of the session shares: assertions compare a scrape before and
after, never absolute counts. tests/test_metrics_processes.py runs the real
`auditlog serve --workers 2`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from auditlog.logs import RequestIdFilter
from auditlog.runtime import Services
from auditlog.storage import streams
from tests.conftest import (
    RunningService,
    SpareDatabases,
    WorkspaceKeys,
    create_workspace_keys,
    event,
    make_settings,
    start_service,
    stop_service,
)
from tests.streaming.gql import create_destination
from tests.streaming.receivers import Receiver, wait_until

TOKEN = "metrics-" + "0123456789abcdef" * 2
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
async def metered(
    spare_databases: SpareDatabases, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningService]:
    """A service with a metrics token and its background work (stream worker, sealer,
    maintenance), on a database of its own: its worker takes no other test's destination."""
    url = await spare_databases.new()
    settings = make_settings(url, Path(tmp_path_factory.mktemp("metered")), metrics_token=TOKEN)
    running = await start_service(settings, background=True)
    yield running
    await stop_service(running)


@pytest.fixture
async def client(metered: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=metered.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def ws(metered: RunningService, client: httpx.AsyncClient) -> WorkspaceKeys:
    return await create_workspace_keys(metered.services, client)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def test_metrics_is_not_found_without_a_token_setting(http: httpx.AsyncClient) -> None:
    # The session's service has no AUDITLOG_METRICS_TOKEN: the route does not exist.
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404


async def test_metrics_requires_its_token(client: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": TOKEN},
    ):
        response = await client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert TOKEN not in response.text
    samples = await scrape(client)
    assert value(samples, "auditlog_metrics_database_up") == 1


async def test_ingest_is_counted_per_batch_with_refusals_by_reason(
    client: httpx.AsyncClient, ws: WorkspaceKeys
) -> None:
    before = await scrape(client)
    events = [event() for _ in range(3)]
    body = orjson.dumps([*events, events[0]])  # the repeat is a duplicate
    response = await client.post(
        "/v1/events",
        content=body,
        headers={**ws.auth(ws.ingest_key), "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    refusals = {
        "unauthenticated": await client.post("/v1/events", json=[event()]),
        "malformed": await client.post("/v1/events", content=b"[{", headers=ws.auth(ws.ingest_key)),
        "invalid": await client.post(
            "/v1/events", json=[{"action": 1}], headers=ws.auth(ws.ingest_key)
        ),
        "forbidden": await client.post("/v1/events", json=[event()], headers=ws.auth(ws.member)),
    }
    assert [r.status_code for r in refusals.values()] == [401, 400, 422, 403]
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("auditlog_ingest_events_total", outcome="accepted") == 3
    assert delta("auditlog_ingest_events_total", outcome="duplicate") == 1
    assert delta("auditlog_ingest_batches_total") == 1
    assert delta("auditlog_ingest_bytes_total") == len(body)
    for reason in refusals:
        assert delta("auditlog_ingest_refusals_total", reason=reason) == 1, reason
    labels = {"endpoint": "/v1/events", "method": "POST"}
    assert delta("auditlog_http_request_duration_seconds_count", **labels) == 5
    assert delta("auditlog_http_request_duration_seconds_sum", **labels) > 0
    assert delta("auditlog_http_requests_total", endpoint="/v1/events", status="202") == 1
    assert delta("auditlog_http_requests_total", endpoint="/v1/events", status="401") == 1


async def test_graphql_operations_are_timed_by_name(
    client: httpx.AsyncClient, ws: WorkspaceKeys
) -> None:
    before = await scrape(client)
    named = "query RecentLogins { auditEvents(first: 1) { edges { node { id } } } }"
    assert "errors" not in await ws.gql(named)
    assert "errors" not in await ws.gql("{ workspace { id } }")
    after = await scrape(client)
    count = "auditlog_graphql_operation_duration_seconds_count"
    for operation in ("RecentLogins", "anonymous"):
        labels = {"type": "query", "operation": operation}
        assert value(after, count, **labels) - value(before, count, **labels) == 1
    route = {"endpoint": "/graphql", "method": "POST"}
    histogram = "auditlog_http_request_duration_seconds_count"
    assert value(after, histogram, **route) - value(before, histogram, **route) >= 2


async def test_destinations_report_lag_status_deliveries_and_failures(
    client: httpx.AsyncClient, ws: WorkspaceKeys
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        good = await create_destination(ws, {"webhook": {"url": receiver.url + "/ok"}}, "good")
        # Nothing listens there: every send fails.
        bad = await create_destination(ws, {"webhook": {"url": "http://127.0.0.1:9/x"}}, "bad")
        # Besides these, the workspace's own audit_log.* events (the creations) count.
        await ws.ingest([event() for _ in range(4)])
        good_labels = {
            "workspace": ws.id,
            "destination": good["destination"]["id"],
            "kind": "WEBHOOK",
        }
        bad_labels = {**good_labels, "destination": bad["destination"]["id"]}

        async def settled() -> bool:
            samples = await scrape(client)
            return (
                value(samples, "auditlog_destination_delivered_events_total", **good_labels) >= 4
                and value(samples, "auditlog_destination_lag_events", **good_labels) == 0
                and value(samples, "auditlog_destination_failures_total", **bad_labels) >= 1
            )

        await wait_until(settled, within=30, step=0.2)
        samples = await scrape(client)
        assert value(samples, "auditlog_destination_lag_seconds", **good_labels) == 0
        assert value(samples, "auditlog_destination_deliveries_total", **good_labels) >= 1
        assert value(samples, "auditlog_destination_status", **good_labels, status="ACTIVE") == 1
        assert value(samples, "auditlog_destination_lag_events", **bad_labels) >= 4
        assert value(samples, "auditlog_destination_lag_seconds", **bad_labels) > 0
        assert value(samples, "auditlog_destination_consecutive_failures", **bad_labels) >= 1
        assert value(samples, "auditlog_destination_status", **bad_labels, status="PAUSED") == 0
    finally:
        await receiver.stop()


async def test_process_and_database_gauges_are_there(client: httpx.AsyncClient) -> None:
    samples = await scrape(client)
    names = {name for name, _ in samples}
    for name in (
        "auditlog_db_pool_connections_in_use",
        "auditlog_db_pool_waiting",
        "auditlog_db_pool_connections_max",
        "auditlog_live_subscribers",
        "auditlog_integrity_sealing_lag_seconds",
        "auditlog_integrity_unsealed_workspaces",
    ):
        assert name in names, name
    assert value(samples, "auditlog_db_pool_connections_max") == 10
    for method in ("rows", "partition"):
        assert ("auditlog_retention_purged_events_total", frozenset({("method", method)})) in (
            samples
        )


# Request ids ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("req-42.A_b", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("has space", False),
        ("a/b;c", False),
        ("", False),
        (None, False),
    ],
)
async def test_a_sane_request_id_is_kept_and_any_other_replaced(
    http: httpx.AsyncClient, given: str | None, kept: bool
) -> None:
    headers = {} if given is None else {"X-Request-Id": given}
    response = await http.get("/healthz", headers=headers)
    returned = response.headers["x-request-id"]
    if kept:
        assert returned == given
    else:
        assert returned != given and re.fullmatch(r"[0-9a-f]{16}", returned)


async def test_the_masked_graphql_error_and_its_log_line_carry_the_request_id(
    workspace: WorkspaceKeys,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("a fault with details for the log only")

    monkeypatch.setattr(streams, "read_destinations", broken)
    caplog.handler.addFilter(RequestIdFilter())
    request_id = f"trace-{uuid.uuid4().hex}"
    with caplog.at_level(logging.ERROR, logger="auditlog.graphql"):
        response = await workspace.http.post(
            "/graphql",
            json={"query": "{ streamingDestinations { id } }"},
            headers={**workspace.auth(workspace.admin), "X-Request-Id": request_id},
        )
    assert response.headers["x-request-id"] == request_id
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    assert request_id in error["message"] and "details" not in error["message"]
    logged = [r for r in caplog.records if r.name == "auditlog.graphql"]
    assert logged and all(getattr(r, "request_id", None) == request_id for r in logged)


async def test_generated_request_ids_differ_and_name_the_masked_error(
    workspace: WorkspaceKeys, monkeypatch: pytest.MonkeyPatch, services: Services
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(streams, "read_destinations", broken)
    seen = set()
    for _ in range(2):
        response = await workspace.http.post(
            "/graphql",
            json={"query": "{ streamingDestinations { id } }"},
            headers={**workspace.auth(workspace.admin), "X-Request-Id": "bad id"},
        )
        request_id = response.headers["x-request-id"]
        assert response.json()["errors"][0]["extensions"]["requestId"] == request_id
        seen.add(request_id)
    assert len(seen) == 2
