"""Enrichment at ingest: location from a MaxMind City database, device from the
user agent. A lookup that fails gives null, never a refused event."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from ua_parser import parse as parse_user_agent

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _warn_once_without_database() -> None:
    log.warning(
        "AUDITLOG_GEOIP_DB is not set: events are stored without location "
        "(set it to a MaxMind City .mmdb file to enrich them)"
    )


def _coordinate(value: float | None) -> float | int | None:
    # RFC 8785 writes an integral double as an integer (51.0 as 51): as an int,
    # orjson writes it the same way, and the payload keeps orjson's fast path.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class GeoIP:
    """City lookups, cached: the same addresses repeat within a workspace."""

    def __init__(self, path: Path | None, *, quiet: bool = False) -> None:
        self._reader: Any = None
        if path is None:
            if not quiet:
                _warn_once_without_database()
            return
        import geoip2.database

        self._reader = geoip2.database.Reader(str(path))
        self.lookup = lru_cache(maxsize=65536)(self._lookup)  # type: ignore[method-assign]

    def lookup(self, ip: str) -> dict[str, Any] | None:
        return None

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
