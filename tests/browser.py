"""Headless Chromium for the console tests: Debian's /usr/bin/chromium driven by
Playwright's async API inside the pytest-asyncio session loop (the service runs
in the same loop). No browser is ever downloaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    WebSocketRoute,
    expect,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
    "--no-first-run",
    "--disable-sync",
]
# axe-core from npm (tests/axe, `npm ci` there: .ci/run does it).
AXE_SCRIPT = Path(__file__).resolve().parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "console"
LAPTOP = {"width": 1440, "height": 900}
# A shared 2-core CI machine: give assertions on the page more than the default 5 s.
expect.set_options(timeout=10_000)
# The browser's time zone, unlike the machine's: the console must show local time.
BROWSER_ZONE = ZoneInfo("Europe/Berlin")


@dataclass
class ConsolePage:
    """One browser tab on the console, recording what a test must never see."""

    page: Page
    context: BrowserContext
    base_url: str
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    async def sign_in(self, token: str, path: str = "/") -> None:
        await self.page.goto(self.base_url + path)
        await self.page.get_by_label("API key or console token").fill(token)
        await self.page.get_by_role("button", name="Sign in").click()

    async def signed_in(self, token: str, path: str = "/") -> None:
        await self.sign_in(token, path)
        await self.page.locator("#console").wait_for(state="visible")
        await self.wait_loaded()

    async def wait_loaded(self) -> None:
        await expect(self.page.locator("#status")).to_contain_text("shown")

    async def copied(self, target: Locator) -> str:
        """The text a user copies after selecting all of `target`."""
        text: str = await target.evaluate(
            """node => {
                 const range = document.createRange();
                 range.selectNodeContents(node);
                 const selection = getSelection();
                 selection.removeAllRanges();
                 selection.addRange(range);
                 const text = selection.toString();
                 selection.removeAllRanges();
                 return text;
               }"""
        )
        return text

    async def axe(self) -> dict[str, list[dict[str, Any]]]:
        """axe-core's results on the page as it is: its violations, and what it could not
        decide ("incomplete", to review), each with its impact and the nodes concerned."""
        if not await self.page.evaluate("typeof window.axe === 'object'"):
            await self.page.add_script_tag(path=str(AXE_SCRIPT))
        results: dict[str, list[dict[str, Any]]] = await self.page.evaluate(
            """async () => {
                 const types = ["violations", "incomplete"];
                 const result = await axe.run(document, { resultTypes: types });
                 const brief = (v) => ({
                   id: v.id, impact: v.impact, help: v.help,
                   nodes: v.nodes.map((n) => n.target.join(" ")),
                 });
                 return Object.fromEntries(types.map((t) => [t, result[t].map(brief)]));
               }"""
        )
        return results

    def rows(self) -> Locator:
        return self.page.locator("#event-rows tr")

    async def row_ids(self) -> list[str]:
        ids = await self.rows().evaluate_all("rows => rows.map(r => r.dataset.eventId)")
        return [str(i) for i in ids]

    async def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


async def open_console(
    browser: Browser, base_url: str, *, zone: str = BROWSER_ZONE.key, bypass_csp: bool = False
) -> ConsolePage:
    """A tab in the given time zone; `bypass_csp` lets a test inject a script of its own (axe),
    which the console's script-src 'self' refuses otherwise."""
    context = await browser.new_context(
        viewport=LAPTOP,
        accept_downloads=True,
        timezone_id=zone,
        locale="en-GB",
        bypass_csp=bypass_csp,
    )
    context.set_default_timeout(15_000)
    page = await context.new_page()
    opened = ConsolePage(page, context, base_url)

    async def on_dialog(dialog: Dialog) -> None:
        opened.dialogs.append(dialog.message)
        await dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            opened.console_errors.append(message.text)

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: opened.page_errors.append(str(error)))
    page.on("console", on_console)
    return opened


@dataclass
class LiveLine:
    """The page's /graphql websockets, proxied through Playwright to the real
    service so a test can cut the line (`cut`) or refuse new connections."""

    sockets: list[WebSocketRoute] = field(default_factory=list)
    refuse: bool = False

    @classmethod
    async def install(cls, page: Page) -> LiveLine:
        line = cls()
        await page.route_web_socket("**/graphql", line._route)
        return line

    async def _route(self, ws: WebSocketRoute) -> None:
        if self.refuse:
            await ws.close(code=1011, reason="service down (test)")
            return
        ws.connect_to_server()
        self.sockets.append(ws)

    async def cut(self) -> None:
        await self.sockets[-1].close(code=1011, reason="dropped by test")
