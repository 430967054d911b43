"""Stored payloads are RFC 8785 (JCS) byte for byte.

`auditlog.jcs.jcs_dumps` against the `rfc8785` package on seeded random values
and the RFC's own examples; then events posted through the real service, whose
stored payload text must be what rfc8785 writes for its parsed value, whether
ingest took orjson's fast path or the fallback.
"""

from __future__ import annotations

import math
import random
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
import rfc8785

from auditlog.ingest.canonical import canonical_json, float_for_orjson
from auditlog.ingest.validate import EventIn, validate_event
from auditlog.jcs import MAX_SAFE_INTEGER, jcs_dumps, number_text
from tests.conftest import WorkspaceKeys, event

# Characters where JSON, UTF-8 and UTF-16 disagree most: controls and the
# characters JSON escapes, Latin-1, the last BMP characters before and after the
# surrogates (U+E000 up sorts after astral characters in UTF-16 code units but
# before them in code points), astral characters, and characters other JSON
# encoders escape but JCS must not (U+2028, U+007F).
ALPHABET = [
    *"abcAZ09 _-./",
    *(chr(c) for c in range(0x20)),
    '"',
    "\\",
    "\x7f",
    "\x80",
    "é",
    "ö",
    "€",
    "\u2028",
    "\u2029",
    "\ud7ff",
    "\ue000",
    "\uf8ff",
    "\ufb33",
    "\ufeff",
    "\uffff",
    "\U00010000",
    "😀",
    "🇫🇷",
    "\U0010ffff",
]


def random_string(rng: random.Random, longest: int = 8) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest)))


EDGE_FLOATS = [
    *(0.0, -0.0, 1e21, 1e-7, 1e-6, 9.999999999999997e-7, 5e-324, -5e-324, 0.1, 1 / 3),
    *(1.7976931348623157e308, 2.0**53, 1e16, 123456789012345680000.0, 100.0, -1.0),
]


def random_float(rng: random.Random) -> float:
    choice = rng.random()
    if choice < 0.25:  # any double at all
        while True:
            value: float = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if math.isfinite(value):
                return value
    if choice < 0.5:
        return rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30)
    if choice < 0.7:  # integral floats
        return float(rng.randint(-(2**53) + 1, 2**53 - 1) >> rng.randint(0, 53))
    if choice < 0.85:  # around where orjson and JCS change notation
        return rng.uniform(1, 10) * 10.0 ** rng.choice([-8, -7, -6, -5, -4, 15, 16, 20, 21])
    return rng.choice(EDGE_FLOATS)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice(
            [0, -1, 1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, rng.randint(-(10**15), 10**15)]
        )
    if kind in (2, 3):
        return random_float(rng)
    if kind in (4, 5):
        return random_string(rng)
    if kind in (6, 7):
        return {
            random_string(rng, 4): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))
        }
    return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def accepted(value: Any) -> Any:
    """value without the doubles ingest refuses (2**53 <= |x| < 1e21, which JCS
    writes as integers beyond the safe range): they are moved up to 1e21 and more."""
    if isinstance(value, dict):
        return {k: accepted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [accepted(v) for v in value]
    if isinstance(value, float) and 2.0**53 <= abs(value) < 1e21:
        return value * 1e6
    return value


# RFC 8785 appendix B: IEEE 754 bit patterns and their JCS text.
NUMBER_EXAMPLES = {
    0x0000000000000000: "0",
    0x8000000000000000: "0",
    0x0000000000000001: "5e-324",
    0x8000000000000001: "-5e-324",
    0x7FEFFFFFFFFFFFFF: "1.7976931348623157e+308",
    0xFFEFFFFFFFFFFFFF: "-1.7976931348623157e+308",
    0x4340000000000000: "9007199254740992",
    0xC340000000000000: "-9007199254740992",
    0x4430000000000000: "295147905179352830000",
    0x44B52D02C7E14AF5: "9.999999999999997e+22",
    0x44B52D02C7E14AF6: "1e+23",
    0x44B52D02C7E14AF7: "1.0000000000000001e+23",
    0x444B1AE4D6E2EF4E: "999999999999999700000",
    0x444B1AE4D6E2EF4F: "999999999999999900000",
    0x444B1AE4D6E2EF50: "1e+21",
    0x3EB0C6F7A0B5ED8C: "9.999999999999997e-7",
    0x3EB0C6F7A0B5ED8D: "0.000001",
    0x41B3DE4355555553: "333333333.3333332",
    0x41B3DE4355555554: "333333333.33333325",
    0x41B3DE4355555555: "333333333.3333333",
    0x41B3DE4355555556: "333333333.3333334",
    0x41B3DE4355555557: "333333333.33333343",
    0xBECBF647612F3696: "-0.0000033333333333333333",
    0x43143FF3C1CB0959: "1424953923781206.2",
}


@pytest.mark.parametrize("bits", list(NUMBER_EXAMPLES))
def test_numbers_of_the_rfc(bits: int) -> None:
    value = struct.unpack(">d", bits.to_bytes(8, "big"))[0]
    assert number_text(value) == NUMBER_EXAMPLES[bits]
    assert jcs_dumps(value) == NUMBER_EXAMPLES[bits].encode()


def test_keys_sort_by_utf16_code_units_as_in_the_rfc() -> None:
    # RFC 8785 section 3.2.3: the astral U+1F600 sorts before U+FB33.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\x80": "Control",
        "\xf6": "Latin Small Letter O With Diaeresis",
    }
    order = list(orjson.loads(jcs_dumps(value)))
    assert order == ["\r", "1", "\x80", "\xf6", "\u20ac", "\U0001f600", "\ufb33"]
    assert jcs_dumps(value) == rfc8785.dumps(value)


def test_strings_escape_only_what_jcs_escapes() -> None:
    text = "".join(chr(c) for c in range(0x80)) + "\u2028\ufeff\ue000😀"
    out = jcs_dumps(text)
    assert out == rfc8785.dumps(text)
    assert out.startswith(b'"\\u0000\\u0001') and b"\\b\\t\\n\\u000b\\f\\r" in out
    assert b'\\"' in out and b"\\\\" in out and b"/" in out and "\x7f\u2028".encode() in out


def test_random_values_against_rfc8785() -> None:
    rng = random.Random(8785)
    for _ in range(20_000):
        value = random_value(rng)
        assert jcs_dumps(value) == rfc8785.dumps(value), value
    for _ in range(100_000):
        number = random_float(rng)
        assert number_text(number).encode() == rfc8785.dumps(number), number


def test_what_jcs_cannot_carry_is_a_value_error() -> None:
    for value in [
        math.nan,
        math.inf,
        -math.inf,
        MAX_SAFE_INTEGER + 1,
        -MAX_SAFE_INTEGER - 1,
        {"a": [2**64]},
        "\ud800",
        {"\udc00": 1},
    ]:
        with pytest.raises(ValueError):
            jcs_dumps(value)
    for value in [{1: 2}, b"x", {"a": object()}]:
        with pytest.raises(TypeError):
            jcs_dumps(value)
    assert jcs_dumps((1, [True, None], {})) == b"[1,[true,null],{}]"


def test_float_for_orjson_gives_what_orjson_writes_as_jcs() -> None:
    rng = random.Random(2)
    for _ in range(50_000):
        number = random_float(rng)
        if number.is_integer() and abs(number) > MAX_SAFE_INTEGER:
            continue  # refused by ingest validation before it gets here
        form = float_for_orjson(number)
        if form is None:
            assert orjson.dumps(number) != rfc8785.dumps(number), number
        else:
            assert orjson.dumps(form) == rfc8785.dumps(number), number


NOW = datetime.now(UTC)


def sendable(rng: random.Random) -> dict[str, Any]:
    """A random event ingest accepts, with unusual strings, keys and numbers."""
    metadata = {random_string(rng, 5): random_value(rng) for _ in range(rng.randint(0, 6))}
    metadata = accepted(metadata)
    return event(
        rng.choice(["file.uploaded", "user.login.success", "ai.workflow.created"]),
        # NUL is left out of the actor id, which is also a text column PostgreSQL refuses it in.
        actor={
            "type": "USER",
            "id": random_string(rng).replace("\x00", "0"),
            "name": random_string(rng, 20),
        },
        targets=[{"type": "file", "name": random_string(rng)} for _ in range(rng.randint(0, 2))],
        ipAddress=rng.choice(["81.2.69.142", "192.0.2.9", "198.18.0.7", "10.0.0.1"]),
        userAgent=rng.choice(["curl/8.5.0", random_string(rng, 30) or "x"]),
        metadata=metadata,
        occurredAt=NOW.isoformat(),
    )


def validated(raw: dict[str, Any]) -> EventIn:
    result = validate_event(orjson.loads(orjson.dumps(raw)), 0, NOW)
    assert isinstance(result, EventIn), result
    return result


def test_canonical_json_is_jcs_on_both_paths() -> None:
    rng = random.Random(20261128)
    plain = 0
    for _ in range(3000):
        e = validated(sendable(rng))
        text = canonical_json(e.metadata, plain=e.metadata_plain)
        assert text.encode() == rfc8785.dumps(e.metadata)
        assert canonical_json(e.metadata) == text
        plain += e.metadata_plain
    assert 300 < plain < 2700  # both paths were taken


async def stored_payloads(conn: asyncpg.Connection, workspace_id: str, ids: list[str]) -> list[str]:
    rows = await conn.fetch(
        "SELECT payload FROM audit_events WHERE workspace_id = $1 AND id = ANY($2::uuid[])",
        workspace_id,
        [uuid.UUID(i) for i in ids],
    )
    return [r["payload"] for r in rows]


async def test_ingested_payloads_are_stored_as_jcs(
    workspace: WorkspaceKeys, owner: asyncpg.Connection
) -> None:
    rng = random.Random(8785)
    events = [sendable(rng) for _ in range(600)]
    for start in range(0, len(events), 200):
        response = await workspace.ingest(events[start : start + 200])
        assert response.status_code == 202, response.text
    texts = await stored_payloads(owner, workspace.id, [e["id"] for e in events])
    assert len(texts) == len(events)
    differs_from_orjson = 0
    for stored in texts:
        assert stored.encode() == rfc8785.dumps(orjson.loads(stored)), stored
        differs_from_orjson += (
            stored != orjson.dumps(orjson.loads(stored), option=orjson.OPT_SORT_KEYS).decode()
        )
    assert differs_from_orjson > 50  # the fallback was exercised, not only orjson's path


async def test_location_coordinates_are_jcs(
    workspace: WorkspaceKeys, owner: asyncpg.Connection
) -> None:
    events = [event(ipAddress=ip) for ip in ("192.0.2.9", "198.18.0.7", "81.2.69.142")]
    assert (await workspace.ingest(events)).status_code == 202
    texts = await stored_payloads(owner, workspace.id, [e["id"] for e in events])
    locations = "".join(texts)
    assert '"latitude":51,"longitude":0,' in locations
    assert '"latitude":-0.000002,"longitude":-78,' in locations
    assert '"latitude":51.5142,' in locations
    for stored in texts:
        assert stored.encode() == rfc8785.dumps(orjson.loads(stored))


async def test_numbers_beyond_the_safe_integers_are_refused(
    workspace: WorkspaceKeys, owner: asyncpg.Connection
) -> None:
    cases = [
        ({"count": 2**53}, "metadata.count"),
        ({"count": -(2**53)}, "metadata.count"),
        ({"count": 2**64 - 1}, "metadata.count"),
        ({"ok": 1, "deep": {"list": [1, 2**63 - 1]}}, "metadata.deep.list[1]"),
        ({"big": 1e20}, "metadata.big"),  # JCS writes it as an integer beyond the range
        ({"big": 9007199254740992.0}, "metadata.big"),
    ]
    for metadata, field in cases:
        body = event("file.uploaded", metadata=metadata)
        response = await workspace.ingest([event("file.uploaded"), body])
        assert response.status_code == 422, (metadata, response.text)
        (error,) = response.json()["errors"]
        assert (error["index"], error["field"]) == (1, field), error
        assert "string" in error["message"] and "2**53" in error["message"]
    count = await owner.fetchval(
        "SELECT count(*) FROM audit_events WHERE workspace_id = $1 AND action = 'file.uploaded'",
        workspace.id,
    )
    assert count == 0
    # The edges of the range, and doubles written with an exponent, are stored.
    edges = {"max": MAX_SAFE_INTEGER, "min": -MAX_SAFE_INTEGER, "huge": 1e21, "tiny": 1e-7}
    body = event("file.uploaded", metadata=edges)
    assert (await workspace.ingest([body])).status_code == 202
    (stored,) = await stored_payloads(owner, workspace.id, [body["id"]])
    assert (
        '"metadata":{"huge":1e+21,"max":9007199254740991,"min":-9007199254740991,"tiny":1e-7}'
        in stored
    )


def test_the_same_walk_keeps_the_depth_limit() -> None:
    def nested(levels: int) -> dict[str, Any]:
        """Objects and arrays in turn, the outermost an object, the leaf at `levels`."""
        value: Any = 1.0
        for i in range(levels - 1):
            value = [value] if (levels - i) % 2 else {"a": value}
        assert isinstance(value, dict)
        return value

    for levels, ok in ((2, True), (16, True), (17, False), (40, False)):
        result = validate_event(event(metadata=nested(levels)), 0, datetime.now(UTC))
        assert isinstance(result, EventIn) is ok, (levels, result)
        if not ok:
            assert isinstance(result, list)
            assert (result[0].field, result[0].message) == (
                "metadata",
                "nests deeper than 16 levels",
            )
