"""auditEvents filters: each alone and combined, against a client-side filter of a
known data set ingested through the real API."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from auditlog.catalog import CATALOG, CATEGORY_OF
from auditlog.runtime import Services
from tests.conftest import RunningService, WorkspaceKeys, create_workspace_keys, event

IDS_QUERY = """query($filter: AuditEventFilter, $first: Int, $after: String) {
  auditEvents(filter: $filter, first: $first, after: $after) {
    edges { cursor node { id } }
    pageInfo { hasNextPage endCursor }
  }
}"""

ACTORS = [
    ("u_1", "Ada@Acme.io"),
    ("u_2", "grace@acme.io"),
    ("u_3", "linus@acme.io"),
    ("u_4", None),
]
IPS = [
    "81.2.69.142",
    "81.2.69.7",
    "89.160.20.112",
    "10.1.2.3",
    "10.200.0.9",
    "2001:db8::1",
    "2001:db8:0:1::5",
    None,
]
TARGETS = ["f_1", "f_2", "f_3", "doc_9"]
NOW = datetime.now(UTC).replace(microsecond=0)
# Ingest refuses audit_log.* (the service writes those itself).
SENDABLE = [e.action for e in CATALOG if not e.action.startswith("audit_log.")]


def known_events(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for i in range(count):
        actor_id, email = rng.choice(ACTORS)
        ip = rng.choice(IPS)
        body = event(
            rng.choice(SENDABLE),
            occurredAt=(NOW - timedelta(hours=rng.randrange(0, 24 * 20))).isoformat(),
            actor={"type": "USER", "id": actor_id, "name": f"n{i}", "email": email},
            targets=[{"type": "file", "id": t} for t in rng.sample(TARGETS, rng.randrange(0, 3))],
        )
        if ip is None:
            del body["ipAddress"]
        else:
            body["ipAddress"] = ip
        events.append(body)
    return events


def matches(e: dict[str, Any], flt: dict[str, Any]) -> bool:
    when = datetime.fromisoformat(e["occurredAt"])
    checks: list[Callable[[], bool]] = []
    if "occurredFrom" in flt:
        checks.append(lambda: when >= datetime.fromisoformat(flt["occurredFrom"]))
    if "occurredTo" in flt:
        checks.append(lambda: when < datetime.fromisoformat(flt["occurredTo"]))
    if "actorEmail" in flt:
        checks.append(
            lambda: (e["actor"]["email"] or "").lower() == flt["actorEmail"].strip().lower()
        )
    if "actorId" in flt:
        checks.append(lambda: e["actor"]["id"] == flt["actorId"])
    if "categories" in flt:
        checks.append(lambda: CATEGORY_OF[e["action"]].value in flt["categories"])
    if "actions" in flt:
        checks.append(
            lambda: any(
                e["action"].startswith(p[:-1]) if p.endswith(".*") else e["action"] == p
                for p in flt["actions"]
            )
        )
    if "ipAddress" in flt:
        net = ipaddress.ip_network(flt["ipAddress"], strict=False)
        checks.append(
            lambda: (
                "ipAddress" in e
                and ipaddress.ip_address(e["ipAddress"]).version == net.version
                and ipaddress.ip_address(e["ipAddress"]) in net
            )
        )
    if "targetId" in flt:
        checks.append(lambda: any(t["id"] == flt["targetId"] for t in e["targets"]))
    return all(check() for check in checks)


def expected_ids(events: list[dict[str, Any]], flt: dict[str, Any]) -> list[str]:
    """Newest first; ties in occurredAt broken by ingest order, later first."""
    ordered = sorted(
        enumerate(events),
        key=lambda pair: (datetime.fromisoformat(pair[1]["occurredAt"]), pair[0]),
        reverse=True,
    )
    return [e["id"] for _, e in ordered if matches(e, flt)]


async def fetch_all(ws: WorkspaceKeys, flt: dict[str, Any], page: int = 500) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        body = await ws.gql(IDS_QUERY, {"filter": flt, "first": page, "after": after})
        assert "errors" not in body, body
        conn = body["data"]["auditEvents"]
        ids += [edge["node"]["id"] for edge in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            return ids
        after = conn["pageInfo"]["endCursor"]


@pytest.fixture(scope="module")
async def module_http(service: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def loaded(
    services: Services, module_http: httpx.AsyncClient
) -> tuple[WorkspaceKeys, list[dict[str, Any]]]:
    ws = await create_workspace_keys(services, module_http)
    # The service's own audit_log.api_key.created events are part of the log too.
    body = await ws.gql("{ auditEvents(last: 500) { edges { node { payload } } } }")
    service_events = [edge["node"]["payload"] for edge in body["data"]["auditEvents"]["edges"]]
    service_events.reverse()  # oldest first: ingest order
    for e in service_events:
        if e["ipAddress"] is None:
            del e["ipAddress"]
    events = known_events(600)
    response = await ws.ingest(events)
    assert response.status_code == 202, response.text
    events = service_events + events
    # Noise in another workspace that must never show up.
    other = await create_workspace_keys(services, module_http)
    assert (await other.ingest(known_events(100, seed=8))).status_code == 202
    return ws, events


FROM = (NOW - timedelta(days=9)).isoformat()
TO = (NOW - timedelta(days=3)).isoformat()

SINGLE_FILTERS: list[dict[str, Any]] = [
    {},
    {"occurredFrom": FROM},
    {"occurredTo": TO},
    {"occurredFrom": FROM, "occurredTo": TO},
    {"actorEmail": "ada@acme.io"},
    {"actorEmail": "  ADA@ACME.IO "},
    {"actorId": "u_4"},
    {"categories": ["DATA"]},
    {"categories": ["AUTHENTICATION", "AI"]},
    {"actions": ["user.login.success"]},
    {"actions": ["user.login.*"]},
    {"actions": ["workspace.*", "file.uploaded"]},
    {"ipAddress": "81.2.69.142"},
    {"ipAddress": "81.2.69.0/24"},
    {"ipAddress": "10.0.0.0/8"},
    {"ipAddress": "2001:db8::/32"},
    {"ipAddress": "2001:db8::1"},
    {"targetId": "f_2"},
]

COMBINED_FILTERS: list[dict[str, Any]] = [
    {"actorEmail": "grace@acme.io", "categories": ["DATA", "WORKSPACE"]},
    {"actions": ["user.login.*"], "ipAddress": "81.2.69.0/24"},
    {"occurredFrom": FROM, "occurredTo": TO, "targetId": "f_1"},
    {"actorId": "u_1", "ipAddress": "2001:db8::/32", "occurredFrom": FROM},
    {"categories": ["AUTHENTICATION"], "actions": ["file.*"]},  # disjoint: nothing
    {
        "occurredFrom": (NOW - timedelta(days=15)).isoformat(),
        "occurredTo": NOW.isoformat(),
        "actorEmail": "linus@acme.io",
        "actorId": "u_3",
        "categories": ["DATA", "AUTHENTICATION", "WORKSPACE"],
        "actions": ["file.*", "user.*", "workspace.user.*"],
        "ipAddress": "10.0.0.0/8",
        "targetId": "f_3",
    },
]


@pytest.mark.parametrize("flt", SINGLE_FILTERS, ids=lambda f: ",".join(f) or "none")
async def test_each_filter_matches_client_side_filter(
    loaded: tuple[WorkspaceKeys, list[dict[str, Any]]], flt: dict[str, Any]
) -> None:
    ws, events = loaded
    expected = expected_ids(events, flt)
    assert await fetch_all(ws, flt) == expected
    if flt:
        assert 0 < len(expected) < len(events), "the data set must make this filter bite"


@pytest.mark.parametrize("flt", COMBINED_FILTERS, ids=lambda f: "+".join(f))
async def test_combined_filters_match_client_side_filter(
    loaded: tuple[WorkspaceKeys, list[dict[str, Any]]], flt: dict[str, Any]
) -> None:
    ws, events = loaded
    assert await fetch_all(ws, flt, page=37) == expected_ids(events, flt)


async def test_filters_inline_in_the_document_work_too(
    loaded: tuple[WorkspaceKeys, list[dict[str, Any]]],
) -> None:
    ws, events = loaded
    body = await ws.gql(
        """{ auditEvents(first: 500, filter: {categories: [AI], actions: ["ai.*"],
               ipAddress: "10.0.0.0/8"}) { edges { node { id category ipAddress } } } }"""
    )
    got = [e["node"]["id"] for e in body["data"]["auditEvents"]["edges"]]
    expected = expected_ids(
        events, {"categories": ["AI"], "actions": ["ai.*"], "ipAddress": "10.0.0.0/8"}
    )
    assert got == expected and expected
