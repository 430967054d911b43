"""The Audit Logs console in a real browser (Debian's Chromium via Playwright),
against the real service: sign-in, the table, hostile event fields, filters in
the URL, row detail and its integrity check, actor investigation, export and
the live tail."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import jwt
import pytest
from playwright.async_api import Browser, Download, Locator, Route, async_playwright, expect

from auditlog.integrity import merkle
from auditlog.integrity.notes import VerifierKey, open_checkpoint
from auditlog.runtime import Services
from auditlog.services import integrity as integrity_service
from auditlog.services import keys as key_service
from tests.browser import (
    AXE_SCRIPT,
    BROWSER_ZONE,
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsolePage,
    LiveLine,
    open_console,
)
from tests.conftest import JWT_SECRET, RunningService, WorkspaceKeys, event

pytestmark = pytest.mark.browser

MEMBER_REFUSED = (
    "Access denied: the member role cannot read the audit log; "
    "sign in with an owner's or admin's key or token."
)
HOSTILE_NAME = '<img src=x onerror="window.__pwned=1">'
HOSTILE_SCRIPT = "<script>window.__pwned=2</script>"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        # CI installs it and must run these; a new machine with only Python skips them.
        message = "/usr/bin/chromium is missing: apt-get install -y chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def console(browser: Browser, service: RunningService) -> AsyncIterator[ConsolePage]:
    opened = await open_console(browser, service.base_url)
    yield opened
    await opened.context.close()
    assert not opened.page_errors, opened.page_errors
    assert not opened.dialogs, opened.dialogs


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


def utc_offset(zone: ZoneInfo) -> str:
    """The zone's offset now, as the console writes it: UTC+01:00."""
    offset = datetime.now(zone).strftime("%z")
    return f"UTC{offset[:3]}:{offset[3:]}"


async def ingest(workspace: WorkspaceKeys, events: list[dict[str, Any]]) -> None:
    response = await workspace.ingest(events)
    assert response.status_code == 202, response.text


async def test_sign_in_shows_rows_newest_first_with_local_time_and_badges(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    grace = {"type": "USER", "id": "u_2", "name": "Grace Hopper", "email": "grace@acme.io"}
    first_login = event(occurredAt=ago(30), actor=grace)
    upload = event("file.uploaded", occurredAt=ago(20), actor=grace)
    system = event(
        "workspace.billing.plan_changed",
        occurredAt=ago(10),
        actor={"type": "SYSTEM"},
        ipAddress=None,
        userAgent=None,
    )
    await ingest(workspace, [first_login, upload, system])
    page = console.page
    await console.page.goto(console.base_url + "/")
    await console.screenshot("01-sign-in")
    await console.signed_in(workspace.admin)
    ours = {system["id"], upload["id"], first_login["id"]}
    shown = [i for i in await console.row_ids() if i in ours]
    assert shown == [system["id"], upload["id"], first_login["id"]]

    login_row = console.page.locator(f"tr[data-event-id='{first_login['id']}']")
    await expect(login_row.locator("td").nth(1)).to_contain_text("Grace Hopper")
    await expect(login_row.locator("td").nth(1)).to_contain_text("grace@acme.io")
    await expect(login_row.locator("td").nth(2)).to_contain_text("user.login.success")
    badges = await login_row.locator("[data-anomaly]").evaluate_all(
        "nodes => nodes.map(n => n.dataset.anomaly)"
    )
    assert sorted(badges) == ["NEW_COUNTRY", "NEW_DEVICE", "NEW_IP"]
    await expect(login_row.locator("td").nth(4)).to_have_text("81.2.69.142")
    await expect(login_row.locator("td").nth(5)).to_contain_text("London")
    await expect(login_row.locator("td").nth(6)).to_contain_text("Firefox")
    system_row = console.page.locator(f"tr[data-event-id='{system['id']}']")
    await expect(system_row.locator("td").nth(1)).to_have_text("System")
    # The service's own events (the workspace's keys were just created) are there too.
    await expect(console.page.locator("tr", has_text="audit_log.api_key.created")).to_have_count(4)

    # Berlin time on screen, UTC on hover.
    stamp = login_row.locator("time")
    occurred = datetime.fromisoformat(first_login["occurredAt"])
    await expect(stamp).to_contain_text(occurred.astimezone(BROWSER_ZONE).strftime("%H:%M:%S"))
    assert await stamp.get_attribute("title") == occurred.strftime("%Y-%m-%d %H:%M:%S UTC")
    await expect(page.locator("#tz-note")).to_have_text(
        f"Times in Central European Time ({utc_offset(BROWSER_ZONE)}); hover a time for UTC."
    )

    # The token lives in sessionStorage only: never in the address, never in localStorage.
    assert workspace.admin not in page.url
    assert await page.evaluate("JSON.stringify(localStorage)") == "{}"
    assert workspace.admin in await page.evaluate("JSON.stringify(sessionStorage)")
    await console.screenshot("02-events")


async def test_load_more_pages_through_cursors(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    events = [event("file.uploaded", occurredAt=ago(60 - i)) for i in range(57)]
    await ingest(workspace, events)
    await console.signed_in(workspace.admin)
    await console.page.get_by_label("Category").select_option("DATA")
    await console.page.get_by_role("button", name="Apply filters").click()
    await expect(console.rows()).to_have_count(50)
    await console.page.get_by_role("button", name="Load more").click()
    await expect(console.rows()).to_have_count(57)
    await expect(console.page.get_by_role("button", name="Load more")).to_be_hidden()
    assert await console.row_ids() == [e["id"] for e in reversed(events)]


async def test_bad_token_and_member_get_clear_messages(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    page = console.page
    await console.sign_in("alk_key_0000000000000000.not-a-real-secret")
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("401")
    await expect(alert).to_contain_text("valid API key")
    await expect(page.locator("#console")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length") == 0

    await console.sign_in(workspace.member)
    # One sentence: the service's reason (naming the role), then what to do.
    await expect(alert).to_have_text(MEMBER_REFUSED)
    await expect(page.locator("#console")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length") == 0
    await console.screenshot("03-member-forbidden")


def session_token(workspace_id: str, role: str) -> str:
    claims = {"sub": "u_9", "email": "ops@acme.io", "workspace": workspace_id, "role": role}
    return jwt.encode({**claims, "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")


async def test_console_session_tokens_sign_in_and_members_are_refused(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    sent = event()
    await ingest(workspace, [sent])
    page = console.page
    await console.sign_in(session_token(workspace.id, "member"))
    await expect(page.get_by_role("alert")).to_have_text(MEMBER_REFUSED)
    await console.signed_in(session_token(workspace.id, "owner"))
    await expect(page.locator(f"tr[data-event-id='{sent['id']}']")).to_have_count(1)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("alert")).to_have_text("Signed out.")
    assert await page.evaluate("sessionStorage.length") == 0


async def test_hostile_event_fields_are_shown_as_text_and_never_run(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    hostile = event(
        "file.share.created",
        actor={"type": "USER", "id": "u_x", "name": HOSTILE_NAME, "email": "mallory@evil.io"},
        targets=[{"type": "file", "id": "f_x", "name": HOSTILE_SCRIPT}],
        metadata={"note": HOSTILE_SCRIPT, "html": HOSTILE_NAME},
    )
    await ingest(workspace, [hostile])
    page = console.page
    await console.signed_in(workspace.admin)
    row = console.rows().first
    await expect(row.locator(".actor-name")).to_have_text(HOSTILE_NAME)
    await expect(row.locator(".target-item").first).to_contain_text(HOSTILE_SCRIPT)

    await row.get_by_role("button", name="file.share.created").click()
    payload_view = page.locator("#detail-json")
    await expect(payload_view).to_contain_text('"note": "<script>window.__pwned=2</script>"')
    await expect(page.locator("#detail-summary")).to_contain_text(HOSTILE_NAME)
    await console.screenshot("04-hostile-detail")

    # Text, not markup: no element was made from the data, no handler ran, no dialog opened.
    assert await page.locator("main img, main script, dialog img, dialog script").count() == 0
    await page.wait_for_timeout(300)
    assert await page.evaluate("window.__pwned") is None
    assert console.dialogs == []


async def test_filters_by_actor_and_category_live_in_the_url(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    ada = event("user.login.success", occurredAt=ago(5))
    linus_actor = {"type": "USER", "id": "u_3", "name": "Linus", "email": "linus@acme.io"}
    linus_upload = event("file.uploaded", occurredAt=ago(4), actor=linus_actor)
    linus_login = event("user.login.failed", occurredAt=ago(3), actor=linus_actor)
    await ingest(workspace, [ada, linus_upload, linus_login])
    page = console.page
    await console.signed_in(workspace.admin)
    await expect(console.rows()).to_have_count(3 + 4)  # with the four key-created events

    await page.get_by_label("Actor email").fill("LINUS@acme.io")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(console.rows()).to_have_count(2)
    assert await console.row_ids() == [linus_login["id"], linus_upload["id"]]
    assert "actor=LINUS%40acme.io" in page.url

    await page.get_by_label("Category").select_option("DATA")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(console.rows()).to_have_count(1)
    assert await console.row_ids() == [linus_upload["id"]]
    assert "category=DATA" in page.url
    assert workspace.admin not in page.url
    await console.screenshot("05-filtered")

    # A shared view: the same address shows the same rows with the form filled in.
    await page.reload()
    await console.wait_loaded()
    assert await console.row_ids() == [linus_upload["id"]]
    await expect(page.get_by_label("Actor email")).to_have_value("LINUS@acme.io")
    await expect(page.get_by_label("Category")).to_have_value("DATA")

    # Back in history returns to the actor-only view.
    await page.go_back()
    await expect(console.rows()).to_have_count(2)
    await expect(page.get_by_label("Category")).to_have_value("")

    await page.get_by_label("Action").fill("user.login.*")
    await page.get_by_label("Actor email").fill("")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(console.rows()).to_have_count(2)
    assert await console.row_ids() == [linus_login["id"], ada["id"]]
    assert "action=user.login.*" in page.url or "action=user.login.%2A" in page.url


async def test_date_range_is_read_in_local_time_and_shared_in_utc(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    events = [event("file.uploaded", occurredAt=ago(minutes)) for minutes in (180, 120, 60)]
    await ingest(workspace, events)
    page = console.page
    await console.signed_in(workspace.admin)
    start = (datetime.now(UTC) - timedelta(minutes=150)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=60)
    local = "%Y-%m-%dT%H:%M"
    await page.get_by_label("From", exact=True).fill(start.astimezone(BROWSER_ZONE).strftime(local))
    await page.get_by_label("To", exact=True).fill(end.astimezone(BROWSER_ZONE).strftime(local))
    await page.get_by_role("button", name="Apply filters").click()
    await expect(console.rows()).to_have_count(1)
    assert await console.row_ids() == [events[1]["id"]]
    query = page.url.partition("?")[2]
    assert f"from={start:%Y-%m-%dT%H}%3A{start:%M}%3A00Z" in query
    assert f"to={end:%Y-%m-%dT%H}%3A{end:%M}%3A00Z" in query


async def test_bad_filter_value_names_the_field_once(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    await ingest(workspace, [event()])
    page = console.page
    await console.signed_in(workspace.admin)
    field = page.get_by_role("textbox", name="IP address or CIDR")
    await field.fill("10.0.0.0/99")
    await page.get_by_role("button", name="Apply filters").click()
    # The API says "filter.ipAddress: must be …" and names the argument: said once, by its label.
    status = page.get_by_role("status").first
    await expect(status).to_have_text("“IP address or CIDR” must be an IP address or a CIDR block.")
    await expect(field).to_be_focused()
    await expect(field).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#console")).to_be_visible()

    await field.fill("10.0.0.0/8")
    await page.get_by_role("button", name="Apply filters").click()
    await console.wait_loaded()
    await expect(field).not_to_have_attribute("aria-invalid", "true")


async def test_row_detail_shows_pretty_json_and_copies_it(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    sent = event("file.uploaded", metadata={"size": 1024, "folder": "Reports"})
    await ingest(workspace, [sent])
    page = console.page
    await console.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await console.signed_in(workspace.admin)

    # Keyboard only: Tab to the row's action button, Enter opens the detail.
    opener = console.rows().first.get_by_role("button", name="file.uploaded")
    await opener.focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    shown = page.locator("#detail-json")
    await expect(shown).to_have_attribute("data-loaded", "")
    text = await shown.text_content()
    assert text is not None
    payload = json.loads(text)
    assert payload["id"] == sent["id"]
    assert payload["metadata"] == {"size": 1024, "folder": "Reports"}
    assert text == json.dumps(payload, indent=2, ensure_ascii=False)
    stored = await workspace.gql(
        "query($id: ID!) { auditEvent(id: $id) { payload } }", {"id": sent["id"]}
    )
    assert payload == stored["data"]["auditEvent"]["payload"]

    await page.get_by_role("button", name="Copy JSON").click()
    await expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")
    assert json.loads(await page.evaluate("navigator.clipboard.readText()")) == payload
    await console.screenshot("06-row-detail")

    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    assert await opener.evaluate("node => node === document.activeElement")


async def test_investigate_actor_shows_actor_activity(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    upload = event("file.uploaded", occurredAt=ago(30))
    await ingest(
        workspace,
        [event(occurredAt=ago(50)), event(occurredAt=ago(40), ipAddress="89.160.20.112"), upload],
    )
    page = console.page
    await console.signed_in(workspace.admin)
    row = page.locator(f"tr[data-event-id='{upload['id']}']")
    await row.get_by_role("button", name="Investigate ada@acme.io").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Actor activity: ada@acme.io")
    ips = dialog.locator("table.seen").nth(0)
    await expect(ips).to_contain_text("81.2.69.142")
    await expect(ips).to_contain_text("89.160.20.112")
    await expect(dialog.locator("table.seen").nth(1)).to_contain_text("Sweden (SE)")
    await console.screenshot("07-investigate-actor")

    await page.get_by_role("button", name="Show only this actor's events").click()
    await expect(dialog).to_be_hidden()
    assert "actor=ada%40acme.io" in page.url
    await expect(page.get_by_label("Actor email")).to_have_value("ada@acme.io")


async def test_export_csv_downloads_the_filtered_events(
    console: ConsolePage, workspace: WorkspaceKeys, tmp_path: Path
) -> None:
    logins = [event(occurredAt=ago(20 - i)) for i in range(3)]
    upload = event("file.uploaded", occurredAt=ago(1), metadata={"formula": "=1+2"})
    await ingest(workspace, [*logins, upload])
    page = console.page
    await console.signed_in(workspace.admin)
    await page.get_by_label("Category").select_option("AUTHENTICATION")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(console.rows()).to_have_count(3)

    await page.get_by_label("Export format").select_option("CSV")
    async with page.expect_download() as waiting:
        await page.get_by_role("button", name="Export", exact=True).click()
    download = await waiting.value
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    assert saved.suffix == ".csv"
    rows = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8-sig"))))
    header, body = rows[0], rows[1:]
    assert len(body) == 3
    id_column = header.index("id")
    assert {r[id_column] for r in body} == {e["id"] for e in logins}
    await expect(page.locator("#export-result")).to_contain_text("3 events")
    await console.screenshot("08-export")


async def test_export_of_several_parts_downloads_every_part_at_once(
    console: ConsolePage, workspace: WorkspaceKeys, tmp_path: Path
) -> None:
    # 10,000 rows a file (docs/exports.md): 10,004 events make two parts.
    events = [
        event("ai.api_key.used", occurredAt=ago(100 - i / 200), metadata={"n": i})
        for i in range(10_004)
    ]
    for start in range(0, len(events), 1000):
        await ingest(workspace, events[start : start + 1000])
    page = console.page
    downloads: list[Download] = []
    page.on("download", lambda download: downloads.append(download))
    await console.signed_in(workspace.admin, "/?action=ai.api_key.used")
    await expect(page.get_by_label("Action")).to_have_value("ai.api_key.used")
    await page.get_by_label("Export format").select_option("JSON")
    await page.get_by_role("button", name="Export", exact=True).click()
    await expect(page.locator("#export-result li")).to_have_count(2)
    for _ in range(100):
        if len(downloads) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(downloads) == 2
    exported: list[str] = []
    for download in downloads:
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        exported.extend(e["id"] for e in json.loads(saved.read_text()))
    assert len({d.suggested_filename for d in downloads}) == 2
    assert len(exported) == len(set(exported)) == len(events)
    assert set(exported) == {e["id"] for e in events}


async def test_live_tail_shows_new_events_at_the_top(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    older = event("file.deleted", occurredAt=ago(10))
    await ingest(workspace, [older])
    page = console.page
    await console.signed_in(workspace.admin, "/?category=DATA")
    await expect(console.rows()).to_have_count(1)
    await page.get_by_label("Live tail").check()
    await expect(page.locator("#live-status")).to_contain_text("Live")

    # One batch, the non-matching event first: the filter holds on the live path too.
    login = event("user.login.success")
    fresh = event("file.uploaded", targets=[{"type": "file", "id": "f_new", "name": "new.pdf"}])
    await ingest(workspace, [login, fresh])
    first = console.rows().first
    await expect(first).to_have_attribute("data-event-id", fresh["id"])
    await expect(first).to_have_class("fresh")
    assert await console.row_ids() == [fresh["id"], older["id"]]
    await expect(page.locator("#status")).to_contain_text("2 events shown")
    await console.screenshot("09-live-tail")


async def test_live_tail_resumes_after_a_dropped_connection_without_losing_events(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    await ingest(workspace, [event(occurredAt=ago(10))])
    page = console.page
    line = await LiveLine.install(page)
    await console.signed_in(workspace.admin)
    await page.get_by_label("Live tail").check()
    await expect(page.locator("#live-status")).to_contain_text("Live")
    first_live = event("file.uploaded")
    await ingest(workspace, [first_live])
    await expect(console.rows().first).to_have_attribute("data-event-id", first_live["id"])

    line.refuse = True
    await line.cut()
    await expect(page.locator("#live-status")).to_contain_text("reconnecting")
    while_down = [event("file.deleted"), event("folder.created")]
    await ingest(workspace, while_down)
    line.refuse = False
    await expect(page.locator("#live-status")).to_contain_text("Live", timeout=20_000)
    after = event("file.share.created")
    await ingest(workspace, [after])
    await expect(console.rows().first).to_have_attribute("data-event-id", after["id"])
    ids = await console.row_ids()
    assert ids[:4] == [after["id"], while_down[1]["id"], while_down[0]["id"], first_live["id"]]
    assert len(ids) == len(set(ids)) == 5 + 4  # with the four key-created events


async def test_live_tail_with_a_revoked_key_returns_to_sign_in(
    console: ConsolePage, workspace: WorkspaceKeys, services: Services
) -> None:
    created = await key_service.create_key(
        services.pool, services.ingestor, workspace_id=workspace.id, role="admin"
    )
    page = console.page
    await console.signed_in(created.key)
    await page.get_by_label("Live tail").check()
    await expect(page.locator("#live-status")).to_contain_text("Live")
    await key_service.revoke_key(services.pool, services.ingestor, created.id, bus=services.bus)
    # The service closes the open socket with 4401 (within 5 s): no reconnect needed.
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("401", timeout=5_000)
    await expect(alert).to_contain_text("revoked")
    await expect(page.locator("#console")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_console_is_served_with_a_strict_csp(service: RunningService) -> None:
    async with httpx.AsyncClient(base_url=service.base_url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        host = service.base_url.removeprefix("http://")
        assert directives["connect-src"] == f"'self' ws://{host} wss://{host}"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in csp and "http" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        module = '<script type="module" src="/console/js/main.js">'
        assert page.text.count("<script") == page.text.count(module) == 1

        script = await http.get("/console/js/main.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.headers["content-security-policy"] == csp
        etag = script.headers["etag"]
        again = await http.get("/console/js/main.js", headers={"If-None-Match": etag})
        assert again.status_code == 304

        for missing in (
            "/console/nope.js",
            "/console/../endpoints/console.py",
            "/console/js/%2e%2e/index.html",
        ):
            assert (await http.get(missing)).status_code == 404, missing
        forged = await http.get("/", headers={"Host": "evil.example; script-src *"})
        assert "evil" not in forged.headers["content-security-policy"]


# Keyboard and screen-reader use: names and focus are read from the accessibility tree (roles and
# accessible names), never from CSS classes.


async def test_after_sign_in_focus_is_on_the_heading_and_the_skip_link_is_next(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    page = console.page
    await page.goto(console.base_url + "/")
    await page.get_by_label("API key or console token").fill(workspace.admin)
    await page.keyboard.press("Enter")
    await console.wait_loaded()
    await expect(page.get_by_role("heading", name="Audit Logs", level=1)).to_be_focused()

    focused = page.locator(":focus")
    for role, name in [
        ("link", "Skip to the events"),
        ("combobox", "Export format"),
        ("button", "Export"),
        ("button", "Sign out"),
        ("button", "Last hour"),
        ("button", "Last 24 hours"),
        ("button", "Last 7 days"),
        ("button", "Last 30 days"),
    ]:
        await page.keyboard.press("Tab")
        await expect(focused).to_have_role(role)  # type: ignore[arg-type]
        await expect(focused).to_have_accessible_name(name)
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("From", exact=True)).to_be_focused()

    # The skip link, from the top: it focuses the events table, so the next Tab is in it.
    await page.get_by_role("heading", name="Audit Logs").focus()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to the events")).to_be_focused()
    await page.keyboard.press("Enter")
    events = page.get_by_role("table", name="Audit events, newest first.")
    await expect(events).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(events.get_by_role("button").first).to_be_focused()


async def test_cells_read_apart_and_the_open_button_names_the_event(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    ada = {"type": "USER", "id": "u_7", "name": "Ada Lovelace", "email": "ada.lovelace@acme.io"}
    deleted = event(
        "ai.workflow.deleted",
        occurredAt=ago(2),
        actor=ada,
        targets=[{"type": "file", "id": "f_57", "name": "console-doc-57.pdf"}],
    )
    await ingest(workspace, [deleted])
    page = console.page
    await console.signed_in(workspace.admin)
    row = page.locator(f"tr[data-event-id='{deleted['id']}']")
    occurred = datetime.fromisoformat(deleted["occurredAt"])
    local = await row.locator("time").text_content()
    assert local is not None and occurred.astimezone(BROWSER_ZONE).strftime("%H:%M:%S") in local
    utc = occurred.strftime("%Y-%m-%d %H:%M:%S UTC")

    # The accessible names of the cells (as a screen reader reads them), word by word.
    for name in [
        f"{local} ({utc})",
        "Ada Lovelace ada.lovelace@acme.io Investigate ada.lovelace@acme.io",
        f"ai.workflow.deleted by Ada Lovelace at {local} AI",
        "console-doc-57.pdf (file)",
    ]:
        await expect(row.get_by_role("cell", name=name, exact=True)).to_have_count(1)
    # The row's open button says which event it opens: action, actor and time.
    opener = row.get_by_role("button", name=f"ai.workflow.deleted by Ada Lovelace at {local}")
    await expect(opener).to_have_count(1)
    await expect(opener).to_have_text("ai.workflow.deleted")  # the visible label starts the name

    # What a user copies from the cells.
    cells = row.get_by_role("cell")
    copied = [await console.copied(cells.nth(i)) for i in range(4)]
    assert [c.replace("\u00a0", " ") for c in copied] == [
        f"{local} ({utc})",
        "Ada Lovelace\nada.lovelace@acme.io Investigate",
        "ai.workflow.deleted\nAI",
        "console-doc-57.pdf (file)",
    ]

    # The service's own events (the key-created ones): a key as target, no IP, place or device.
    service_row = page.locator("tr", has_text="audit_log.api_key.created").first
    target = service_row.get_by_role("cell").nth(3)
    assert re.fullmatch(r"key_[0-9a-f]+ \(api_key\)", await console.copied(target))
    await expect(service_row.get_by_role("cell", name="none", exact=True)).to_have_count(3)
    for column in (4, 5, 6):
        await expect(service_row.get_by_role("cell").nth(column)).to_have_accessible_name("none")
        dash = (
            await service_row.get_by_role("cell")
            .nth(column)
            .evaluate("cell => getComputedStyle(cell.firstElementChild, '::before').content")
        )
        assert dash.startswith('"—"'), dash  # what is seen

    # Category names: "AI", an acronym, not "Ai".
    category = page.get_by_role("combobox", name="Category")
    await expect(category.get_by_role("option", name="AI", exact=True)).to_have_count(1)
    await expect(category.get_by_role("option", name="Ai", exact=True)).to_have_count(0)
    await expect(category.get_by_role("option", name="Authentication", exact=True)).to_have_count(1)
    await console.screenshot("13-cells")


async def test_the_time_zone_note_names_the_browser_zone_and_its_offset(
    browser: Browser, service: RunningService, workspace: WorkspaceKeys
) -> None:
    kolkata = await open_console(browser, service.base_url, zone="Asia/Kolkata")
    try:
        # Chromium's ICU still reports the retired identifier for this zone.
        reported = await kolkata.page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
        assert reported in {"Asia/Kolkata", "Asia/Calcutta"}
        await kolkata.signed_in(workspace.admin)
        await expect(kolkata.page.locator("#tz-note")).to_have_text(
            "Times in India Standard Time (UTC+05:30); hover a time for UTC."
        )
        assert not kolkata.page_errors, kolkata.page_errors
    finally:
        await kolkata.context.close()


async def test_quick_ranges_set_from_and_leave_to_open(
    console: ConsolePage, workspace: WorkspaceKeys
) -> None:
    minutes = {"hour": 30, "day": 5 * 60, "week": 3 * 1440, "month": 10 * 1440, "older": 40 * 1440}
    sent = {key: event("file.uploaded", occurredAt=ago(m)) for key, m in minutes.items()}
    await ingest(workspace, list(sent.values()))
    page = console.page
    await console.signed_in(workspace.admin, "/?category=DATA")
    await expect(console.rows()).to_have_count(5)
    ranges = page.get_by_role("group", name="Quick range")
    for name, hours, shown in [
        ("Last hour", 1, ["hour"]),
        ("Last 24 hours", 24, ["hour", "day"]),
        ("Last 7 days", 168, ["hour", "day", "week"]),
        ("Last 30 days", 720, ["hour", "day", "week", "month"]),
    ]:
        before = datetime.now(UTC).replace(microsecond=0)
        button = ranges.get_by_role("button", name=name, exact=True)
        await button.focus()
        await page.keyboard.press("Enter")
        await expect(console.rows()).to_have_count(len(shown))
        assert await console.row_ids() == [sent[key]["id"] for key in shown]
        query = parse_qs(urlsplit(page.url).query)
        assert "to" not in query and query["category"] == ["DATA"]
        start = datetime.fromisoformat(query["from"][0])
        assert (
            before - timedelta(hours=hours) <= start <= datetime.now(UTC) - timedelta(hours=hours)
        )
        await expect(page.get_by_label("To", exact=True)).to_have_value("")
        local = start.astimezone(BROWSER_ZONE).strftime("%Y-%m-%dT%H:%M")
        await expect(page.get_by_label("From", exact=True)).to_have_value(re.compile(f"^{local}"))


SERIOUS = ("serious", "critical")


@pytest.mark.skipif(
    not AXE_SCRIPT.is_file(), reason="needs `npm ci` in tests/axe (.ci/run does it)"
)
async def test_axe_finds_no_serious_or_critical_violation(
    browser: Browser, service: RunningService, workspace: WorkspaceKeys, services: Services
) -> None:
    login = event(occurredAt=ago(3))
    many = event(
        "file.share.created",
        occurredAt=ago(2),
        actor={"type": "USER", "id": "u_x", "name": HOSTILE_NAME, "email": "mallory@evil.io"},
        targets=[{"type": "file", "id": f"f_{i}", "name": f"doc-{i}.pdf"} for i in range(3)],
    )
    system = event(
        "workspace.billing.plan_changed",
        occurredAt=ago(1),
        actor={"type": "SYSTEM"},
        ipAddress=None,
        userAgent=None,
    )
    await ingest(workspace, [login, many, system])
    await seal(services, workspace.id)
    # The console's CSP refuses an injected script: this tab bypasses it to run axe.
    console = await open_console(browser, service.base_url, bypass_csp=True)
    page = console.page
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        await console.sign_in(workspace.member)
        await expect(page.get_by_role("alert")).to_have_text(MEMBER_REFUSED)
        found["sign-in refused"] = await console.axe()

        await console.signed_in(workspace.admin)
        found["signed in"] = await console.axe()

        section = await open_integrity(console, login["id"], "user.login.success")
        await expect(section.get_by_role("status")).to_contain_text("Verified", timeout=15_000)
        await expect(page.locator("#detail-json")).to_have_attribute("data-loaded", "")
        await section.get_by_text("Signed checkpoint").click()
        found["open drawer, integrity verified"] = await console.axe()
        await page.keyboard.press("Escape")
        await expect(page.get_by_role("dialog")).to_be_hidden()

        await page.get_by_role("button", name="Investigate ada@acme.io").first.click()
        await expect(page.get_by_role("dialog")).to_contain_text("81.2.69.142")
        found["actor activity"] = await console.axe()
        await page.keyboard.press("Escape")

        export = page.get_by_role("form", name="Export the events matching the filters")
        await export.get_by_role("combobox", name="Export format").select_option("JSON")
        async with page.expect_download():
            await export.get_by_role("button", name="Export", exact=True).click()
        await expect(page.locator("#export-result")).to_contain_text("download started")
        await export.get_by_role("combobox", name="Export format").focus()
        found["export, with its files listed"] = await console.axe()
        assert not console.page_errors, console.page_errors
    finally:
        await console.context.close()
    serious = {
        state: [v for v in results["violations"] if v["impact"] in SERIOUS]
        for state, results in found.items()
    }
    assert serious == {state: [] for state in found}, json.dumps(serious, indent=1)
    # What axe could not decide is held to the same bar, except colour contrast, which it often
    # cannot work out (text over a mark or a translucent backdrop): an ARIA attribute a role does
    # not allow, or a name that does not hold the visible label, is never left to review.
    undecided = {
        state: [
            v
            for v in results["incomplete"]
            if v["impact"] in SERIOUS and v["id"] != "color-contrast"
        ]
        for state, results in found.items()
    }
    assert undecided == {state: [] for state in found}, json.dumps(undecided, indent=1)


# The integrity section of the row detail: the proof is checked in the browser.

PROOF_QUERY = """query($id: ID!) {
  integrity { verifierKey }
  auditEvent(id: $id) { leafIndex inclusionProof { treeSize checkpoint { signedNote } } }
}"""


async def seal(services: Services, workspace_id: str) -> None:
    async with services.pool.acquire() as conn:
        await integrity_service.seal_until_caught_up(
            conn, workspace_id, services.signing_keys.current()
        )


async def open_integrity(console: ConsolePage, event_id: str, action: str) -> Locator:
    """Open the event's detail; its Integrity section (a region, by its heading)."""
    row = console.page.locator(f"tr[data-event-id='{event_id}']")
    await row.get_by_role("button", name=action).click()
    return console.page.get_by_role("dialog").get_by_role("region", name="Integrity")


async def has_ed25519(console: ConsolePage) -> bool:
    supported: bool = await console.page.evaluate(
        """crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])
             .then(() => true, () => false)"""
    )
    return supported


async def test_row_detail_verifies_the_event_is_in_a_signed_checkpoint(
    console: ConsolePage, workspace: WorkspaceKeys, services: Services
) -> None:
    sent = event(
        "file.share.created",
        actor={"type": "USER", "id": "u_x", "name": HOSTILE_NAME, "email": "mallory@evil.io"},
        metadata={
            "note": HOSTILE_SCRIPT,
            "quoted": 'a "b" \\ c / d',
            "controls": "\u0001\t\n\u001f\u007f\u2028",
            "unicode": "é€😀",
            "é": -7,
            "nested": {"z": [1, 2, {"b": True, "a": None}], "a": "x"},
        },
    )
    await ingest(workspace, [sent, event()])
    await seal(services, workspace.id)
    stored = (await workspace.gql(PROOF_QUERY, {"id": sent["id"]}))["data"]
    proof = stored["auditEvent"]["inclusionProof"]
    size, index = proof["treeSize"], stored["auditEvent"]["leafIndex"]
    assert size == 6  # the four key-created events and these two
    page = console.page
    await console.signed_in(workspace.admin)
    # Debian's Chromium has Ed25519 in WebCrypto: the signature must be checked, not skipped.
    assert await has_ed25519(console)

    section = await open_integrity(console, sent["id"], "file.share.created")
    status = section.get_by_role("status")
    await expect(status).to_contain_text("Verified", timeout=15_000)
    await expect(status).to_contain_text(f"Included in checkpoint {size} as leaf {index}")
    key = VerifierKey.parse(stored["integrity"]["verifierKey"])
    await expect(status).to_contain_text(f"signed by {key.name} (key {key.hash.hex()})")
    await expect(section).to_contain_text("Ed25519 signature")

    # The signed note, folded away, for copying; it is the service's and it verifies.
    shown_note = section.get_by_label("The checkpoint's signed note")
    await expect(shown_note).to_be_hidden()
    await section.get_by_text("Signed checkpoint").click()
    await expect(shown_note).to_be_visible()
    note = await shown_note.text_content()
    assert note == proof["checkpoint"]["signedNote"]
    assert open_checkpoint(note, [key]).size == size
    await console.screenshot("10-integrity-verified")

    assert await page.locator("main img, main script, dialog img, dialog script").count() == 0
    assert await page.evaluate("window.__pwned") is None


def _flip_base64(text: str, at: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


async def test_a_wrong_proof_or_signature_says_verification_failed(
    console: ConsolePage, workspace: WorkspaceKeys, services: Services
) -> None:
    sent = event("file.uploaded", metadata={"size": 1024})
    await ingest(workspace, [sent])
    await seal(services, workspace.id)
    tamper: dict[str, str] = {"what": "hash"}

    async def altered(route: Route) -> None:
        response = await route.fetch()
        body = await response.json()
        if "ConsoleEventProof" not in (route.request.post_data or ""):
            await route.fulfill(response=response, json=body)
            return
        node = body["data"]["auditEvent"]
        proof = node["inclusionProof"]
        if tamper["what"] == "hash":
            proof["hashes"][0] = _flip_base64(proof["hashes"][0], 0)
        elif tamper["what"] == "payload":
            node["payload"]["metadata"]["size"] = 1025
        else:  # the signature: its last byte
            head, _, line = proof["checkpoint"]["signedNote"].rstrip("\n").rpartition("\n")
            name, _, blob = line.rpartition(" ")
            proof["checkpoint"]["signedNote"] = f"{head}\n{name} {_flip_base64(blob, -1)}\n"
        await route.fulfill(response=response, json=body)

    page = console.page
    await page.route("**/graphql", altered)
    await console.signed_in(workspace.admin)
    section = await open_integrity(console, sent["id"], "file.uploaded")
    status = section.get_by_role("status")
    await expect(status).to_contain_text("Verification failed")
    await expect(status).to_contain_text("does not lead to the root hash of checkpoint 5")
    await expect(status).not_to_contain_text("Verified")
    await console.screenshot("11-integrity-failed")

    recheck = section.get_by_role("button", name="Check again")
    tamper["what"] = "payload"
    await recheck.click()
    await expect(status).to_contain_text("Verification failed")
    await expect(status).to_contain_text("does not lead to the root hash")

    tamper["what"] = "signature"
    await recheck.click()
    await expect(status).to_contain_text("Verification failed")
    await expect(status).to_contain_text("signature does not verify")


async def test_an_unsealed_event_says_so_and_checks_again(
    console: ConsolePage, workspace: WorkspaceKeys, services: Services
) -> None:
    sent = event("file.deleted")
    await ingest(workspace, [sent])
    await console.signed_in(workspace.admin)
    section = await open_integrity(console, sent["id"], "file.deleted")
    status = section.get_by_role("status")
    await expect(status).to_have_text("Not yet sealed: events are sealed within seconds.")
    await expect(section.get_by_text("Signed checkpoint")).to_be_hidden()
    await console.screenshot("12-integrity-unsealed")

    await seal(services, workspace.id)
    await section.get_by_role("button", name="Check again").click()
    await expect(status).to_contain_text("Verified")
    await expect(status).to_contain_text("Included in checkpoint 5 as leaf 4")


async def test_without_ed25519_the_signature_is_said_to_be_unchecked(
    console: ConsolePage, workspace: WorkspaceKeys, services: Services
) -> None:
    sent = event("file.uploaded")
    await ingest(workspace, [sent])
    await seal(services, workspace.id)
    # An older browser: WebCrypto without Ed25519 refuses the key as it would.
    await console.page.add_init_script(
        """{
          const importKey = crypto.subtle.importKey.bind(crypto.subtle);
          crypto.subtle.importKey = (format, key, algorithm, ...rest) =>
            algorithm?.name === "Ed25519"
              ? Promise.reject(new DOMException("Unrecognized name.", "NotSupportedError"))
              : importKey(format, key, algorithm, ...rest);
        }"""
    )
    await console.signed_in(workspace.admin)
    section = await open_integrity(console, sent["id"], "file.uploaded")
    status = section.get_by_role("status")
    await expect(status).to_contain_text("Inclusion verified; signature not checked here")
    await expect(status).to_contain_text("Included in checkpoint 5 as leaf 4")
    await expect(section).to_contain_text("auditlog verify")


# RFC 8785's own example (3.2.2, 3.2.3), numbers from its appendix B, and what JSON.parse makes of
# -0: the browser's JCS must give exactly these bytes.
JCS_CASES = [
    (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}',
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    ),
    (
        '{"\\u20ac": 1, "\\r": 2, "\\ufb33": 3, "1": 4, "\\ud83d\\ude00": 5, "\\u0080": 6,'
        ' "\\u00f6": 7}',
        '{"\\r":2,"1":4,"\u0080":6,"ö":7,"€":1,"😀":5,"\ufb33":3}',
    ),
    (
        "[-0, 5e-324, 1.7976931348623157e308, 9007199254740992, 1e21, 1e-7, 0.000001, 100]",
        "[0,5e-324,1.7976931348623157e+308,9007199254740992,1e+21,1e-7,0.000001,100]",
    ),
    ('"\\u0001\\t\\u001f\\u007f\\u2028/"', '"\\u0001\\t\\u001f\u007f\u2028/"'),
    ("{}", "{}"),
    ("[[], {}, [{}]]", "[[],{},[{}]]"),
]


def _tree_root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = merkle.largest_power_of_two_below(len(leaves))
    return merkle.node_hash(_tree_root(leaves[:k]), _tree_root(leaves[k:]))


def _inclusion_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1, written out again so the browser is checked against the RFC."""
    if len(leaves) == 1:
        return []
    k = merkle.largest_power_of_two_below(len(leaves))
    if index < k:
        return [*_inclusion_path(index, leaves[:k]), _tree_root(leaves[k:])]
    return [*_inclusion_path(index - k, leaves[k:]), _tree_root(leaves[:k])]


async def test_the_browser_jcs_and_inclusion_walk_match_the_rfcs(
    console: ConsolePage, service: RunningService
) -> None:
    page = console.page
    await page.goto(service.base_url + "/")
    jcs = await page.evaluate(
        """async (texts) => {
             const { jcs } = await import("/console/js/verify.js");
             return texts.map((t) => jcs(JSON.parse(t)));
           }""",
        [text for text, _ in JCS_CASES],
    )
    assert jcs == [expected for _, expected in JCS_CASES]

    cases = []
    for size in range(1, 18):
        leaves = [merkle.leaf_hash(bytes([i])) for i in range(size)]
        root = base64.b64encode(_tree_root(leaves)).decode()
        for index in range(size):
            path = [base64.b64encode(h).decode() for h in _inclusion_path(index, leaves)]
            assert merkle.verify_inclusion(
                leaves[index], index, size, _inclusion_path(index, leaves), _tree_root(leaves)
            )
            leaf = base64.b64encode(leaves[index]).decode()
            cases.append({"leaf": leaf, "index": index, "size": size, "path": path, "root": root})
    walked = await page.evaluate(
        """async (cases) => {
             const v = await import("/console/js/verify.js");
             const b64 = (t) => v.fromBase64(t, "test");
             const out = [];
             for (const c of cases) {
               const path = c.path.map(b64);
               const root = await v.rootFromPath(b64(c.leaf), c.index, c.size, path);
               // The same path claimed for the next leaf must not lead to the root.
               const moved = await v.rootFromPath(b64(c.leaf), c.index + 1, c.size, path);
               out.push([root && v.hex(root), moved && v.hex(moved)]);
             }
             return out;
           }""",
        cases,
    )
    for case, (root, moved) in zip(cases, walked, strict=True):
        expected = base64.b64decode(case["root"]).hex()
        assert root == expected, case
        assert moved != expected, case
