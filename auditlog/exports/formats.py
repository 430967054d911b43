"""File formats of an export, encoded batch by batch from stored payloads.

CSV: RFC 4180 (comma, double quotes, CRLF) with a header row and the stable
columns below; a cell a spreadsheet would run as a formula (starting with
= + - @ tab or carriage return) gets a leading apostrophe. JSON: one array of
the stored payloads, verbatim. NDJSON: one stored payload a line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from auditlog.ingest.canonical import canonical_json

CSV_COLUMNS = (
    "id",
    "occurredAt",
    "category",
    "action",
    "actorType",
    "actorId",
    "actorName",
    "actorEmail",
    "targets",
    "ipAddress",
    "city",
    "region",
    "country",
    "browser",
    "os",
    "device",
    "userAgent",
    "metadata",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class FileFormat:
    name: str
    extension: str
    media_type: str


FORMATS = {
    "CSV": FileFormat("CSV", "csv", "text/csv; charset=utf-8"),
    "JSON": FileFormat("JSON", "json", "application/json"),
    "NDJSON": FileFormat("NDJSON", "ndjson", "application/x-ndjson"),
}


def neutralise(value: Any) -> str:
    """A CSV cell: empty for null, with a leading apostrophe where it would be a formula."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_cells(payload: dict[str, Any]) -> list[str]:
    """One event as the CSV columns, in CSV_COLUMNS order."""
    actor = payload.get("actor") or {}
    location = payload.get("location") or {}
    device = payload.get("device") or {}
    values = (
        payload.get("id"),
        payload.get("occurredAt"),
        payload.get("category"),
        payload.get("action"),
        actor.get("type"),
        actor.get("id"),
        actor.get("name"),
        actor.get("email"),
        canonical_json(payload.get("targets") or []),
        payload.get("ipAddress"),
        location.get("city"),
        location.get("region"),
        location.get("country"),
        device.get("browser"),
        device.get("os"),
        device.get("device"),
        payload.get("userAgent"),
        canonical_json(payload.get("metadata") or {}),
    )
    return [neutralise(v) for v in values]


async def _encode_csv(batches: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue().encode()
    async for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(csv_cells(orjson.loads(text)) for text in batch)
        yield buffer.getvalue().encode()


async def _encode_json(batches: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    separator = "[\n"
    async for batch in batches:
        yield (separator + ",\n".join(batch)).encode()
        separator = ",\n"
    yield b"[\n]\n" if separator == "[\n" else b"\n]\n"


async def _encode_ndjson(batches: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    async for batch in batches:
        yield ("\n".join(batch) + "\n").encode()


def encode(file_format: FileFormat, batches: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    """The file's bytes, one chunk per batch of stored payloads."""
    encoders = {"CSV": _encode_csv, "JSON": _encode_json, "NDJSON": _encode_ndjson}
    return encoders[file_format.name](batches)
