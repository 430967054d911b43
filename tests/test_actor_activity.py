"""Investigating an account: login anomalies set at ingest, and actorActivity, on a
scripted login history (the test GeoIP database maps 81.2.69.0/24 to GB,
175.16.199.0/24 to CN, 89.160.20.0/24 to SE)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from auditlog.runtime import Services
from tests.conftest import WorkspaceKeys, create_workspace_keys, event

FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)

ANOMALIES = """query($filter: AuditEventFilter) {
  auditEvents(filter: $filter, last: 100) { edges { node { id anomalies } } }
}"""
ACTIVITY = """query($email: String!, $from: DateTime, $to: DateTime) {
  actorActivity(actorEmail: $email, occurredFrom: $from, occurredTo: $to) {
    actorEmail
    ipAddresses { value count firstSeen lastSeen }
    countries { value count firstSeen lastSeen }
    devices { value count firstSeen lastSeen }
  }
}"""


def login(
    step: int,
    ip: str,
    agent: str = FIREFOX_LINUX,
    email: str = "ada@acme.io",
    action: str = "user.login.success",
) -> dict[str, Any]:
    return event(
        action,
        occurredAt=(T0 + timedelta(hours=step)).isoformat(),
        actor={"type": "USER", "id": email.split("@")[0], "name": None, "email": email},
        ipAddress=ip,
        userAgent=agent,
        targets=[],
    )


async def anomalies_by_id(ws: WorkspaceKeys) -> dict[str, list[str]]:
    body = await ws.gql(ANOMALIES, {"filter": {"categories": ["AUTHENTICATION", "DATA"]}})
    return {e["node"]["id"]: e["node"]["anomalies"] for e in body["data"]["auditEvents"]["edges"]}


async def send(ws: WorkspaceKeys, *events: dict[str, Any]) -> None:
    response = await ws.ingest(list(events))
    assert response.status_code == 202, response.text


async def test_login_anomalies_on_a_scripted_history(
    workspace: WorkspaceKeys, services: Services
) -> None:
    first = login(0, "81.2.69.142")
    same = login(1, "81.2.69.142")
    new_ip = login(2, "81.2.69.7")
    failed_cn = login(3, "175.16.199.5", CHROME_WINDOWS, action="user.login.failed")
    success_cn = login(4, "175.16.199.5", CHROME_WINDOWS)
    again_cn = login(5, "175.16.199.5", CHROME_WINDOWS, email="ADA@acme.io")
    upload = event(
        "file.uploaded",
        occurredAt=(T0 + timedelta(hours=6)).isoformat(),
        actor={"type": "USER", "id": "ada", "email": "ada@acme.io"},
        ipAddress="89.160.20.112",
    )
    after_upload = login(7, "89.160.20.112")
    grace = login(8, "81.2.69.142", email="grace@acme.io")
    for e in (first, same, new_ip, failed_cn, success_cn, again_cn, upload, after_upload, grace):
        await send(workspace, e)
    # One batch: the first of two logins from a new address is the new one.
    batch = [login(10, "81.2.69.99"), login(9, "81.2.69.99")]
    await send(workspace, *batch)

    seen = await anomalies_by_id(workspace)
    everything_new = ["NEW_COUNTRY", "NEW_DEVICE", "NEW_IP"]
    assert seen[first["id"]] == everything_new
    assert seen[same["id"]] == []
    assert seen[new_ip["id"]] == ["NEW_IP"]
    # A failed login is flagged but teaches nothing: the success after it is new too.
    assert seen[failed_cn["id"]] == everything_new
    assert seen[success_cn["id"]] == everything_new
    assert seen[again_cn["id"]] == []  # the actor is matched case-insensitively
    assert seen[upload["id"]] == []  # only logins are flagged...
    assert seen[after_upload["id"]] == ["NEW_COUNTRY", "NEW_IP"]  # ...and only logins teach
    assert seen[grace["id"]] == everything_new  # per actor
    assert seen[batch[1]["id"]] == ["NEW_IP"]
    assert seen[batch[0]["id"]] == []

    other = await create_workspace_keys(services, workspace.http)
    elsewhere = login(11, "81.2.69.142")
    await send(other, elsewhere)
    assert (await anomalies_by_id(other))[elsewhere["id"]] == everything_new  # per workspace


def seen(values: list[dict[str, Any]]) -> dict[str, tuple[int, str, str]]:
    return {v["value"]: (v["count"], v["firstSeen"], v["lastSeen"]) for v in values}


def at(step: int) -> str:
    return (T0 + timedelta(hours=step)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_actor_activity_lists_addresses_countries_and_devices(
    workspace: WorkspaceKeys, services: Services
) -> None:
    await send(
        workspace,
        login(0, "81.2.69.142"),
        login(1, "81.2.69.142"),
        login(2, "175.16.199.5", CHROME_WINDOWS, action="user.login.failed"),
        login(3, "2001:db8::7", CHROME_WINDOWS, email="Ada@Acme.IO"),
        login(4, "81.2.69.7"),
        login(5, "89.160.20.112", email="grace@acme.io"),
    )
    body = await workspace.gql(ACTIVITY, {"email": " ADA@acme.io"})
    activity = body["data"]["actorActivity"]
    assert activity["actorEmail"] == "ada@acme.io"
    assert activity["ipAddresses"] == [
        {"value": "81.2.69.7", "count": 1, "firstSeen": at(4), "lastSeen": at(4)},
        {"value": "2001:db8::7", "count": 1, "firstSeen": at(3), "lastSeen": at(3)},
        {"value": "175.16.199.5", "count": 1, "firstSeen": at(2), "lastSeen": at(2)},
        {"value": "81.2.69.142", "count": 2, "firstSeen": at(0), "lastSeen": at(1)},
    ]
    assert seen(activity["countries"]) == {"GB": (3, at(0), at(4)), "CN": (1, at(2), at(2))}
    assert seen(activity["devices"]) == {
        "Firefox / Linux": (3, at(0), at(4)),
        "Chrome / Windows": (2, at(2), at(3)),
    }
    ranged = await workspace.gql(ACTIVITY, {"email": "ada@acme.io", "from": at(1), "to": at(3)})
    ranged_activity = ranged["data"]["actorActivity"]
    assert seen(ranged_activity["ipAddresses"]) == {
        "81.2.69.142": (1, at(1), at(1)),
        "175.16.199.5": (1, at(2), at(2)),
    }
    nobody = await workspace.gql(ACTIVITY, {"email": "nobody@acme.io"})
    assert nobody["data"]["actorActivity"] == {
        "actorEmail": "nobody@acme.io",
        "ipAddresses": [],
        "countries": [],
        "devices": [],
    }
    other = await create_workspace_keys(services, workspace.http)
    elsewhere = await other.gql(ACTIVITY, {"email": "ada@acme.io"})
    assert elsewhere["data"]["actorActivity"]["ipAddresses"] == []


async def test_actor_activity_refusals(workspace: WorkspaceKeys) -> None:
    body = await workspace.gql(ACTIVITY, {"email": "ada@acme.io"}, key=workspace.member)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["data"] is None
    for variables, argument in (
        ({"email": "  "}, "actorEmail"),
        ({"email": "a@b.c", "from": at(3), "to": at(3)}, "occurredTo"),
        ({"email": "a@b.c", "from": "yesterday"}, "occurredFrom"),
    ):
        body = await workspace.gql(ACTIVITY, variables)
        error = body["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", body
        assert error["extensions"]["argument"] == argument, body
