"""Keyset paging both ways: every event exactly once, in order, while events
arrive; pageInfo right at both ends; cursors bound to their workspace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from auditlog.runtime import Services
from tests.conftest import WorkspaceKeys, create_workspace_keys, event

PAGE = """query($first: Int, $after: String, $last: Int, $before: String,
               $filter: AuditEventFilter) {
  auditEvents(first: $first, after: $after, last: $last, before: $before, filter: $filter) {
    edges { cursor node { id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


async def load_history(ws: WorkspaceKeys, count: int) -> list[str]:
    """`count` file events over 300 distinct instants (many ties); ids newest first."""
    events = [
        event("file.uploaded", occurredAt=(BASE - timedelta(minutes=i % 300)).isoformat())
        for i in range(count)
    ]
    for start in range(0, count, 1000):
        response = await ws.ingest(events[start : start + 1000])
        assert response.status_code == 202, response.text
    ordered = sorted(
        enumerate(events), key=lambda p: (p[1]["occurredAt"], p[0]), reverse=True
    )  # equal-length ISO strings: lexical order is time order
    return [e["id"] for _, e in ordered]


async def page(ws: WorkspaceKeys, **variables: Any) -> dict[str, Any]:
    variables.setdefault("filter", {"actions": ["file.uploaded"]})
    body = await ws.gql(PAGE, variables)
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["auditEvents"]
    return result


def ids(conn: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in conn["edges"]]


async def test_paging_forward_while_events_arrive_gives_each_once_in_order(
    workspace: WorkspaceKeys,
) -> None:
    expected = await load_history(workspace, 2500)
    seen: list[str] = []
    conn = await page(workspace, first=97)
    assert conn["pageInfo"]["hasPreviousPage"] is False
    while True:
        seen += ids(conn)
        # New events arrive between pages: newer than everything already listed.
        arriving = [event("file.uploaded") for _ in range(5)]
        assert (await workspace.ingest(arriving)).status_code == 202
        if not conn["pageInfo"]["hasNextPage"]:
            break
        conn = await page(workspace, first=97, after=conn["pageInfo"]["endCursor"])
        assert conn["pageInfo"]["hasPreviousPage"] is True
    assert seen == expected
    assert conn["pageInfo"]["hasNextPage"] is False


async def test_paging_backward_while_events_arrive_gives_each_once_in_order(
    workspace: WorkspaceKeys,
) -> None:
    expected = await load_history(workspace, 2500)
    seen: list[str] = []
    conn = await page(workspace, last=89)
    assert conn["pageInfo"]["hasNextPage"] is False
    while True:
        seen = ids(conn) + seen
        # Late events arrive between pages: older than everything already listed.
        late = [
            event("file.uploaded", occurredAt=(BASE - timedelta(days=3)).isoformat())
            for _ in range(5)
        ]
        assert (await workspace.ingest(late)).status_code == 202
        if not conn["pageInfo"]["hasPreviousPage"]:
            break
        conn = await page(workspace, last=89, before=conn["pageInfo"]["startCursor"])
        assert conn["pageInfo"]["hasNextPage"] is True
    assert seen == expected


async def test_events_arriving_ahead_of_the_reader_are_read_once(
    workspace: WorkspaceKeys,
) -> None:
    expected = await load_history(workspace, 300)
    first = await page(workspace, first=100)
    # A late event lands in the part not read yet: it is read, once, in its place.
    late = event("file.uploaded", occurredAt=(BASE - timedelta(hours=10)).isoformat())
    assert (await workspace.ingest([late])).status_code == 202
    rest = await page(workspace, first=500, after=first["pageInfo"]["endCursor"])
    assert ids(first) + ids(rest) == [*expected, late["id"]]


async def test_page_info_at_both_ends_and_in_the_middle(workspace: WorkspaceKeys) -> None:
    expected = await load_history(workspace, 30)
    top = await page(workspace, first=10)
    assert ids(top) == expected[:10]
    assert (top["pageInfo"]["hasPreviousPage"], top["pageInfo"]["hasNextPage"]) == (False, True)
    middle = await page(workspace, first=10, after=top["pageInfo"]["endCursor"])
    assert ids(middle) == expected[10:20]
    assert (middle["pageInfo"]["hasPreviousPage"], middle["pageInfo"]["hasNextPage"]) == (
        True,
        True,
    )
    bottom = await page(workspace, first=10, after=middle["pageInfo"]["endCursor"])
    assert ids(bottom) == expected[20:]
    assert (bottom["pageInfo"]["hasPreviousPage"], bottom["pageInfo"]["hasNextPage"]) == (
        True,
        False,
    )
    assert bottom["pageInfo"]["startCursor"] == bottom["edges"][0]["cursor"]
    assert bottom["pageInfo"]["endCursor"] == bottom["edges"][-1]["cursor"]
    past = await page(workspace, first=10, after=bottom["pageInfo"]["endCursor"])
    assert past["edges"] == []
    assert past["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "startCursor": None,
        "endCursor": None,
    }
    # Backward from the bottom page's start: the middle page again.
    back = await page(workspace, last=10, before=bottom["pageInfo"]["startCursor"])
    assert ids(back) == expected[10:20]
    assert (back["pageInfo"]["hasPreviousPage"], back["pageInfo"]["hasNextPage"]) == (True, True)
    oldest = await page(workspace, last=10)
    assert ids(oldest) == expected[20:]
    assert (oldest["pageInfo"]["hasPreviousPage"], oldest["pageInfo"]["hasNextPage"]) == (
        True,
        False,
    )
    newest = await page(workspace, last=10, before=middle["pageInfo"]["startCursor"])
    assert ids(newest) == expected[:10]
    assert (newest["pageInfo"]["hasPreviousPage"], newest["pageInfo"]["hasNextPage"]) == (
        False,
        True,
    )
    window = await page(
        workspace,
        first=5,
        after=top["pageInfo"]["endCursor"],
        before=bottom["pageInfo"]["startCursor"],
    )
    assert ids(window) == expected[10:15]
    assert (window["pageInfo"]["hasPreviousPage"], window["pageInfo"]["hasNextPage"]) == (
        True,
        True,
    )


async def test_page_info_is_exact_for_a_cursor_taken_under_another_filter(
    workspace: WorkspaceKeys,
) -> None:
    old = event("folder.created", occurredAt=(BASE - timedelta(days=1)).isoformat())
    assert (await workspace.ingest([old])).status_code == 202
    await load_history(workspace, 5)
    files = await page(workspace, first=5)
    # Nothing of "folder.created" is newer than the newest file event.
    folders = await page(
        workspace,
        first=5,
        after=files["edges"][0]["cursor"],
        filter={"actions": ["folder.created"]},
    )
    assert ids(folders) == [old["id"]]
    assert folders["pageInfo"]["hasPreviousPage"] is False
    assert folders["pageInfo"]["hasNextPage"] is False


async def test_default_and_maximum_page_sizes(workspace: WorkspaceKeys) -> None:
    await load_history(workspace, 520)
    assert len((await page(workspace))["edges"]) == 50
    assert len((await page(workspace, first=500))["edges"]) == 500
    assert len((await page(workspace, last=500))["edges"]) == 500
    zero = await page(workspace, first=0)
    assert zero["edges"] == [] and zero["pageInfo"]["hasNextPage"] is True


async def bad_input(ws: WorkspaceKeys, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = await ws.gql(query, variables)
    assert body["data"] is None or body["data"].get("auditEvents") is None, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert "Traceback" not in error["message"]
    result: dict[str, Any] = error
    return result


async def test_bad_page_arguments_name_the_argument(workspace: WorkspaceKeys) -> None:
    cases = [
        ({"first": 501}, "first"),
        ({"first": -1}, "first"),
        ({"last": 1000}, "last"),
        ({"first": 5, "last": 5}, "last"),
        ({"after": "not-a-cursor"}, "after"),
        ({"before": "bm90LWEtY3Vyc29y"}, "before"),
        ({"after": ""}, "after"),
    ]
    for variables, argument in cases:
        error = await bad_input(workspace, PAGE, variables)
        assert error["extensions"]["argument"] == argument, (variables, error)
        assert argument in error["message"]


async def test_tampered_or_foreign_cursor_is_refused(
    workspace: WorkspaceKeys, services: Services
) -> None:
    await load_history(workspace, 3)
    cursor = (await page(workspace, first=1))["pageInfo"]["endCursor"]
    other = await create_workspace_keys(services, workspace.http)
    error = await bad_input(other, PAGE, {"after": cursor})
    assert error["extensions"]["argument"] == "after"
    error = await bad_input(other, PAGE, {"last": 2, "before": cursor})
    assert error["extensions"]["argument"] == "before"
    tampered = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
    error = await bad_input(workspace, PAGE, {"after": tampered})
    assert error["extensions"]["argument"] == "after"
