"""File formats of an export, encoded batch by batch from stored payloads.

CSV: RFC 4180 (comma, double quotes, CRLF) with a header row and the stable
columns below; a cell a spreadsheet would run as a formula (starting with
= + - @ tab or carriage return) gets a leading apostrophe. JSON: one array of
the stored payloads, verbatim. NDJSON: one stored payload a line. With the
OCSF event format, JSON and NDJSON hold each event's OCSF form instead
(auditlog/ocsf.py), in the same order; CSV has no OCSF form.

CSV records come from the C scanner in _csvfast (built by `pip install` where a
C compiler exists) when it imported: it reads the JSON text without building
Python objects and gives the same bytes as csv_line, which stays the reference
and the fallback: without the extension, and for any batch the scanner refuses
(ValueError: something it does not take exactly as csv_line would).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from auditlog.ocsf import ocsf_json

_fast_csv_lines: Callable[[list[str]], bytes] | None
try:
    from auditlog.exports._csvfast import csv_lines as _fast_csv_lines
except ImportError:  # not compiled (no C compiler at install): the pure-Python path
    _fast_csv_lines = None

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


# Files that can hold OCSF events (a CSV has columns of its own).
OCSF_FILE_FORMATS = frozenset({"JSON", "NDJSON"})

_EMPTY: dict[str, Any] = {}


def text_cell(value: str | None) -> str:
    """A text cell: neutralised when it would run as a formula, quoted when it must be."""
    if value is None:
        return ""
    if value.startswith(_FORMULA_STARTS):
        value = "'" + value
    if '"' in value or "," in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def _json_cell(value: Any) -> str:
    # The payload's keys are already sorted, so this is the canonical form again.
    return '"' + orjson.dumps(value).decode().replace('"', '""') + '"'


def csv_line(payload_text: str) -> str:
    """One stored payload as a CSV record (CSV_COLUMNS order, CRLF-terminated).

    id, occurredAt, category, action and actor type are written by the service
    from validated values (a UUID, a UTC timestamp, catalog names, an enum) and
    need neither quoting nor neutralising; every other cell goes through text_cell.
    """
    event = orjson.loads(payload_text)
    actor = event["actor"]
    location = event.get("location") or _EMPTY
    device = event.get("device") or _EMPTY
    cells = (
        event["id"],
        event["occurredAt"],
        event["category"],
        event["action"],
        actor["type"],
        text_cell(actor.get("id")),
        text_cell(actor.get("name")),
        text_cell(actor.get("email")),
        _json_cell(event.get("targets") or []),
        text_cell(event.get("ipAddress")),
        text_cell(location.get("city")),
        text_cell(location.get("region")),
        text_cell(location.get("country")),
        text_cell(device.get("browser")),
        text_cell(device.get("os")),
        text_cell(device.get("device")),
        text_cell(event.get("userAgent")),
        _json_cell(event.get("metadata") or _EMPTY),
    )
    return ",".join(cells) + "\r\n"


def csv_chunk(batch: list[str]) -> bytes:
    """The CSV records of a batch of stored payloads, as bytes."""
    if _fast_csv_lines is not None:
        try:
            return _fast_csv_lines(batch)
        except ValueError:
            pass  # a payload the scanner refuses: csv_line decides, as it always did
    return "".join([csv_line(text) for text in batch]).encode()


async def _encode_csv(batches: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    yield (",".join(CSV_COLUMNS) + "\r\n").encode()
    async for batch in batches:
        yield csv_chunk(batch)


async def _encode_json(batches: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    separator = "[\n"
    async for batch in batches:
        yield (separator + ",\n".join(batch)).encode()
        separator = ",\n"
    yield b"[\n]\n" if separator == "[\n" else b"\n]\n"


async def _encode_ndjson(batches: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    async for batch in batches:
        yield ("\n".join(batch) + "\n").encode()


async def _encode_ocsf_json(batches: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    separator = b"[\n"
    async for batch in batches:
        yield separator + b",\n".join([ocsf_json(text) for text in batch])
        separator = b",\n"
    yield b"[\n]\n" if separator == b"[\n" else b"\n]\n"


async def _encode_ocsf_ndjson(batches: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    async for batch in batches:
        yield b"".join([ocsf_json(text) + b"\n" for text in batch])


async def encode(
    file_format: FileFormat,
    batches: AsyncGenerator[list[str], None],
    event_format: str = "NATIVE",
) -> AsyncIterator[bytes]:
    """The file's bytes, one chunk per batch of stored payloads. However the file
    ends (complete, or the client gone), `batches` is closed here and then, so
    the download's transaction and connection are given back at once."""
    encoders = {"CSV": _encode_csv, "JSON": _encode_json, "NDJSON": _encode_ndjson}
    if event_format == "OCSF":
        encoders = {"JSON": _encode_ocsf_json, "NDJSON": _encode_ocsf_ndjson}
    async with contextlib.aclosing(batches):
        async for chunk in encoders[file_format.name](batches):
            yield chunk
