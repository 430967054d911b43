"""The C CSV scanner gives csv_line's bytes, or refuses and csv_line decides.

Differential unit tests (no server): `_csvfast.csv_lines(batch)` against the
pure-Python reference `"".join(csv_line(p) for p in batch).encode()` on
hand-written edge cases, thousands of random canonical payloads, and malformed
or non-canonical input, which must raise ValueError so that `csv_chunk` (what
the CSV download writes) falls back and never differs from the reference.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from auditlog.exports import formats
from auditlog.exports.formats import CSV_COLUMNS, FORMATS, csv_chunk, csv_line, encode
from auditlog.ingest.canonical import canonical_json
from auditlog.jcs import MAX_SAFE_INTEGER

fast: Callable[[list[str]], bytes] | None
try:
    from auditlog.exports._csvfast import csv_lines as fast
except ImportError:
    fast = None

needs_fast = pytest.mark.skipif(fast is None, reason="auditlog.exports._csvfast is not compiled")


def sorted_json(value: Any) -> str:
    """orjson with sorted keys: how every payload was stored before RFC 8785, and
    still is for most events (JCS writes them the same): the scanner takes it."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def reference(payloads: list[str]) -> bytes:
    return "".join(csv_line(p) for p in payloads).encode()


def fast_lines(payloads: list[str]) -> bytes:
    assert fast is not None
    return fast(payloads)


def outcome(function: Callable[[list[str]], bytes], payloads: list[str]) -> bytes | type:
    """The bytes, or the type of the exception raised."""
    try:
        return function(payloads)
    except Exception as exc:
        return type(exc)


def assert_same(payloads: list[str]) -> None:
    """The scanner takes every payload and gives the reference's bytes, alone and together."""
    expected = reference(payloads)
    assert fast_lines(payloads) == expected
    for p in payloads:
        assert fast_lines([p]) == reference([p]), p


def assert_never_differs(payloads: list[str]) -> None:
    """Whatever the scanner does with a batch, it never gives other bytes than the
    reference, and csv_chunk (the download's encoder) equals the reference or raises as it does."""
    expected = outcome(reference, payloads)
    got = outcome(fast_lines, payloads)
    if isinstance(got, bytes):
        assert got == expected, payloads
    else:
        assert issubclass(got, ValueError), (got, payloads)
    assert outcome(csv_chunk, payloads) == expected


def assert_refused(text: str) -> None:
    with pytest.raises(ValueError):
        fast_lines([text])
    assert_never_differs([text])


def base(**overrides: Any) -> dict[str, Any]:
    """A stored payload as the ingest service writes it (auditlog/services/ingest.py)."""
    payload: dict[str, Any] = {
        "id": "0193f5a2-7c1e-7d3a-9b2e-0c5d6e7f8a9b",
        "workspaceId": "acme",
        "occurredAt": "2026-11-28T10:00:00.000000Z",
        "receivedAt": "2026-11-28T10:00:00.250000Z",
        "action": "user.login.success",
        "category": "AUTHENTICATION",
        "actor": {"type": "USER", "id": "u_1", "name": "Ada Lovelace", "email": "ada@acme.io"},
        "targets": [{"type": "file", "id": "f_9", "name": "q3-report.pdf"}],
        "ipAddress": "81.2.69.142",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        "location": {
            "city": "London",
            "country": "United Kingdom",
            "countryCode": "GB",
            "latitude": 51.5142,
            "longitude": -0.0931,
            "region": "England",
        },
        "device": {"browser": "Firefox 132", "device": None, "os": "Linux"},
        "metadata": {"method": "password", "mfa": True},
        "anomalies": ["NEW_IP"],
    }
    payload.update(overrides)
    return payload


def stored(**overrides: Any) -> str:
    return sorted_json(base(**overrides))


def without(*keys: str) -> dict[str, Any]:
    payload = base()
    for key in keys:
        del payload[key]
    return payload


def ascii_json(value: Any) -> str:
    """Sorted keys, no white space, every non-ASCII character as a \\u escape
    (surrogate pairs beyond the BMP): valid JSON the text cells must unescape."""
    return json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


# Text columns other than those written as they are (CSV_COLUMNS order).
TEXT_FIELDS: list[tuple[str, ...]] = [
    ("actor", "id"),
    ("actor", "name"),
    ("actor", "email"),
    ("ipAddress",),
    ("location", "city"),
    ("location", "region"),
    ("location", "country"),
    ("device", "browser"),
    ("device", "os"),
    ("device", "device"),
    ("userAgent",),
]


def with_field(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    payload = base()
    if len(path) == 1:
        payload[path[0]] = value
    else:
        payload[path[0]] = {**payload[path[0]], path[1]: value}
    return payload


CONTROL = "".join(chr(c) for c in range(0x20))
TRICKY = [
    "",
    "plain",
    "a,b",
    'say "hi"',
    '"',
    '""',
    ",",
    "line1\nline2",
    "cr\rhere",
    "crlf\r\n",
    "tab\there",
    CONTROL,
    "\x7f",
    "back\\slash",
    "slash/es",
    "{not: [json]}",
    "Zürich",
    "東京都",
    "😀 and 🇫🇷",
    "\u2028\u2029",
    "\ufeffbom",
    "\U0010ffff\ue000",
    "'already quoted",
]
FORMULAS = ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "=", "-", '=HYPERLINK("x","y")', "=a,b"]


@needs_fast
def test_a_realistic_login_event() -> None:
    assert_same([stored()])


@needs_fast
@pytest.mark.parametrize("path", TEXT_FIELDS, ids=".".join)
def test_every_text_column_quotes_escapes_and_neutralises_as_csv_line(
    path: tuple[str, ...],
) -> None:
    payloads = [sorted_json(with_field(path, v)) for v in TRICKY + FORMULAS]
    payloads += [sorted_json(with_field(path, None))]
    assert_same(payloads)
    # The same values with every non-ASCII character and control character escaped.
    assert_same([ascii_json(with_field(path, v)) for v in TRICKY + FORMULAS])


@needs_fast
def test_columns_written_as_they_are() -> None:
    # id, occurredAt, category, action and actor type are never quoted or neutralised.
    odd = ['=x,"y"', "-", "a\nb", "é😀", "\\", ""]
    payloads = []
    for value in odd:
        payloads.append(stored(id=value, occurredAt=value, category=value, action=value))
        payloads.append(stored(actor={"type": value}))
        payloads.append(ascii_json(base(id=value, action=value)))
    assert_same(payloads)


@needs_fast
def test_every_escape_form_in_text_cells() -> None:
    # Hand-written escapes orjson never writes but any JSON reader must take.
    escapes = [
        r"\"",
        r"\\",
        r"\/",
        r"\b",
        r"\f",
        r"\n",
        r"\r",
        r"\t",
        r"\u0000",
        r"\u001F",
        r"\u001f",
        r"\u0041",
        r"\u00e9",
        r"\u00E9",
        r"\u4e2d\u6587",
        r"\ud83d\ude00",
        r"\uD83D\uDE00",
        r"\udbff\udfff",
        r"\u2028",
        r"\uffff",
        r"=\u0022",
    ]
    payloads = []
    for escape in escapes:
        for field in ("name", "email"):
            text = stored(actor={"type": "USER", field: "PLACEHOLDER"})
            payloads.append(text.replace("PLACEHOLDER", f"a{escape}b"))
            payloads.append(text.replace("PLACEHOLDER", escape))  # first character escaped
        payloads.append(stored(userAgent="PLACEHOLDER").replace("PLACEHOLDER", escape))
        payloads.append(stored(id="PLACEHOLDER").replace("PLACEHOLDER", f"x{escape}"))
    assert_same(payloads)


@needs_fast
def test_keys_read_by_exact_match_even_when_escaped() -> None:
    # "\u0069d" is the key "id", "n\u0061me" is "name": Python reads them so, so must C.
    text = stored(actor={"type": "USER", "name": "n"}).replace('"name"', r'"n\u0061me"', 1)
    assert_same([text])
    # Keys that only look alike are other keys.
    assert_same([stored(actor={"type": "USER", "Name": "x", "name ": "y", "nam": "z"})])
    assert_same([stored(ID="not the id", Actor={"type": "SYSTEM"}, targetsX=[1])])


@needs_fast
def test_missing_and_null_actor_fields_location_and_device() -> None:
    payloads = [
        stored(actor={"type": "SYSTEM"}),
        stored(actor={"type": "API_KEY", "id": None, "name": None, "email": None}),
        stored(actor={"type": "USER", "id": "", "name": "", "email": ""}),
        stored(location=None),
        stored(device=None),
        stored(location={}, device={}),
        stored(location={"countryCode": "GB", "latitude": 1.5}),
        stored(device={"browser": None, "os": None, "device": None}),
        stored(ipAddress=None, userAgent=None),
        sorted_json(without("location", "device", "ipAddress", "userAgent")),
        sorted_json(without("targets", "metadata", "anomalies", "receivedAt", "workspaceId")),
        sorted_json(
            {k: v for k, v in base().items() if k in {"id", "occurredAt"}}
            | {
                "category": "c",
                "action": "a",
                "actor": {"type": "USER"},
            }
        ),
    ]
    assert_same(payloads)


NESTED_STRINGS = ["{", "}", "[", "]", '"', '\\"', "\\", ",", ":", '"}]', "[{", "\n", "\x00", "é😀"]


@needs_fast
def test_targets_and_metadata_are_the_canonical_json_of_the_value() -> None:
    payloads = [
        stored(targets=[], metadata={}),
        stored(targets=None, metadata=None),
        sorted_json(without("targets", "metadata")),
        stored(targets=[{"type": s, "id": s, "name": s} for s in NESTED_STRINGS]),
        stored(metadata={s: s for s in NESTED_STRINGS}),
        stored(metadata={c: c for c in CONTROL + '"\\' + "!#/AZaz~\x7fé"}),
        stored(metadata={"list": NESTED_STRINGS, "deep": {"a": [{"b": [[], {}, [{"c": "]}"}]]}]}}),
        stored(
            metadata={
                "ints": [0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 10**18],
                "floats": [0.0, -0.0, 1.5, -2.25, 1e16, 1e-7, 0.1, 1e300, 5e-324, 123456.789],
                "bools": [True, False],
                "none": None,
                "empty": ["", [], {}],
            }
        ),
        stored(metadata={"x": CONTROL + "\x7f", "y": '\\\\\\""', "z": "'=@+-"}),
        stored(metadata={"é": 1, "z": 2, "中": 3, "😀": 4, "\ue000": 5, "\uffff": 6}),
        stored(metadata={"": "empty key", "a": {"": {"": []}}}),
        # A formula start inside JSON is not neutralised (the cell starts with [ or {).
        stored(targets=[{"type": "=cmd"}], metadata={"=": "=1"}),
    ]
    assert_same(payloads)


@needs_fast
def test_large_payloads_grow_the_output() -> None:
    quotes = '"' * 100_000  # doubled in the cell, escaped in the JSON: the output grows most
    payloads = [
        stored(actor={"type": "USER", "name": quotes}, metadata={"q": quotes, "e": "é" * 50_000}),
        stored(userAgent="=" + "a," * 60_000, targets=[{"type": "t", "name": quotes}] * 3),
    ]
    assert_same(payloads * 3)


def random_string(rng: random.Random, alphabet: list[str], longest: int = 14) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


ALPHABET = [
    *"abcXYZ019 .,;:'\"\\/{}[]=+-@\t\r\n\x00\x01\x08\x0c\x1b\x1f\x7f",
    "é",
    "ß",
    "中",
    "文",
    "😀",
    "🇫🇷",
    "\u2028",
    "\ufeff",
    "\U0010ffff",
    "\ue000",
    "\uffff",
]
# Keys without characters JSON escapes.
KEY_ALPHABET = [c for c in ALPHABET if c >= " " and c not in '"\\']


def random_float(rng: random.Random) -> float:
    choice = rng.random()
    if choice < 0.3:
        return round(rng.uniform(-1000, 1000), rng.randint(0, 6))
    if choice < 0.6:
        return rng.uniform(-1, 1) * 10 ** rng.randint(-320, 306)
    return rng.choice([0.0, -0.0, 1e16, 1e15, 1e-5, 1e-7, 5e-324, 2.5e-308, 1e22, 0.1, 1 / 3])


def random_value(rng: random.Random, depth: int, keys: list[str]) -> Any:
    kind = rng.randrange(10 if depth < 4 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, rng.randint(-(10**9), 10**9)])
    if kind == 3:
        return random_float(rng)
    if kind in (4, 5, 6):
        return random_string(rng, ALPHABET)
    if kind in (7, 8):
        return {
            random_string(rng, keys, 6): random_value(rng, depth + 1, keys)
            for _ in range(rng.randint(0, 4))
        }
    return [random_value(rng, depth + 1, keys) for _ in range(rng.randint(0, 4))]


def random_text(rng: random.Random) -> str | None:
    if rng.random() < 0.2:
        return None
    prefix = rng.choice(["", "", "", "=", "+", "-", "@", "\t", "\r", '"', ","])
    return prefix + random_string(rng, ALPHABET)


def random_event(rng: random.Random, keys: list[str] = KEY_ALPHABET) -> dict[str, Any]:
    """A payload of the stored shape, fields randomly null or absent."""
    event: dict[str, Any] = {
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "workspaceId": random_string(rng, ALPHABET),
        "occurredAt": f"2026-11-28T10:00:00.{rng.randrange(10**6):06d}Z",
        "receivedAt": "2026-11-28T10:00:01.000000Z",
        "action": rng.choice(["user.login.success", "file.uploaded", random_string(rng, ALPHABET)]),
        "category": random_string(rng, ALPHABET),
        "actor": {
            "type": rng.choice(["USER", "SYSTEM", "API_KEY", random_string(rng, ALPHABET)]),
            "id": random_text(rng),
            "name": random_text(rng),
            "email": random_text(rng),
        },
        "targets": [
            {"type": random_string(rng, ALPHABET), "id": random_text(rng), "name": random_text(rng)}
            for _ in range(rng.randint(0, 3))
        ],
        "ipAddress": random_text(rng),
        "userAgent": random_text(rng),
        "location": rng.choice(
            [
                None,
                {
                    "city": random_text(rng),
                    "region": random_text(rng),
                    "country": random_text(rng),
                    "countryCode": random_text(rng),
                    "latitude": random_float(rng),
                    "longitude": random_float(rng),
                },
            ]
        ),
        "device": rng.choice(
            [
                None,
                {"browser": random_text(rng), "os": random_text(rng), "device": random_text(rng)},
            ]
        ),
        "metadata": {
            random_string(rng, keys, 8): random_value(rng, 1, keys)
            for _ in range(rng.randint(0, 6))
        },
        "anomalies": rng.sample(["NEW_IP", "NEW_COUNTRY", "NEW_DEVICE"], rng.randint(0, 3)),
    }
    for key in ("id", "name", "email"):
        if rng.random() < 0.1:
            del event["actor"][key]
    for key in ("targets", "ipAddress", "userAgent", "location", "device", "metadata"):
        if rng.random() < 0.1:
            del event[key]
    return event


@needs_fast
def test_thousands_of_random_events_batch_by_batch() -> None:
    rng = random.Random(20261128)
    payloads = [sorted_json(random_event(rng)) for _ in range(5000)]
    start = 0
    while start < len(payloads):
        size = rng.choice([1, 2, 10, 100, 500])
        batch = payloads[start : start + size]
        assert fast_lines(batch) == reference(batch), batch
        start += size


@needs_fast
def test_random_keys_with_escaped_characters() -> None:
    # Keys holding characters JSON escapes (a quote sorts before a comma, but
    # its escape's backslash after it): their order is checked unescaped.
    rng = random.Random(7)
    for _ in range(1000):
        text = sorted_json(random_event(rng, ALPHABET))
        assert fast_lines([text]) == reference([text]), text


BAD_PAYLOADS = {
    "empty": "",
    "not an object": "[]",
    "a string": '"x"',
    "white space around": " " + stored(),
    "white space after": stored() + "\n",
    "white space inside": stored().replace(',"actor":', ', "actor":'),
    "content after": stored() + "{}",
    "non-string id": stored(id=1),
    "null id": stored(id=None),
    "no id": sorted_json(without("id")),
    "non-string occurredAt": stored(occurredAt=["2026"]),
    "no action": sorted_json(without("action")),
    "non-string category": stored(category=True),
    "no actor": sorted_json(without("actor")),
    "null actor": stored(actor=None),
    "actor a list": stored(actor=[]),
    "no actor type": stored(actor={"id": "x"}),
    "null actor type": stored(actor={"type": None}),
    "a number as actor.email": stored(actor={"type": "USER", "email": 5}),
    "a list as actor.name": stored(actor={"type": "USER", "name": ["x"]}),
    "a bool as ipAddress": stored(ipAddress=False),
    "an object as userAgent": stored(userAgent={}),
    "location a string": stored(location="London"),
    "empty location string": stored(location=""),
    "device a list": stored(device=[]),
    "a number as city": stored(location={"city": 1}),
    "targets an object": stored(targets={"a": 1}),
    "empty targets object": stored(targets={}),
    "targets false": stored(targets=False),
    "metadata a list": stored(metadata=[1]),
    "metadata zero": stored(metadata=0),
    "duplicate top-level key": stored().replace('"action":', '"action":"x","action":', 1),
    "duplicate actor key": stored().replace('"email":', '"email":"x","email":', 1),
    "duplicate metadata key": stored(metadata={"a": 1, "b": 2}).replace('"b":2', '"a":2'),
    "unsorted metadata keys": stored(metadata={"a": 1, "b": 2}).replace(
        '"a":1,"b":2', '"b":2,"a":1'
    ),
    "non-canonical \\/ in metadata": stored(metadata={"a": "/"}).replace('"/"', r'"\/"'),
    "non-canonical \\u0041 in targets": stored(targets=[{"type": "A"}]).replace('"A"', r'"\u0041"'),
    "non-canonical \\u0008 in metadata": stored(metadata={"a": "\b"}).replace(r"\b", r"\u0008"),
    "upper-case hex in metadata": stored(metadata={"a": "\x1f"}).replace(r"\u001f", r"\u001F"),
    "surrogate escape in metadata": stored(metadata={"a": "😀"}).replace("😀", r"\ud83d\ude00"),
    "-0 in metadata": stored(metadata={"a": 0}).replace('"a":0', '"a":-0'),
    "integer beyond 64 bits in metadata": stored(metadata={"a": 0}).replace(
        '"a":0', '"a":18446744073709551616'
    ),
    "negative integer beyond 64 bits": stored(metadata={"a": 0}).replace(
        '"a":0', '"a":-9223372036854775809'
    ),
    "non-shortest float in metadata": stored(metadata={"a": 1.5}).replace("1.5", "1.50"),
    "exponent float in metadata": stored(metadata={"a": 100.0}).replace("100.0", "1e2"),
    "upper-case exponent in targets": stored(targets=[1e16]).replace("1e+16", "1E+16"),
    "infinite float": stored(location={"latitude": 1.5}).replace("1.5", "1e400"),
    "huge integer": stored(location={"latitude": 1}).replace(
        '"latitude":1', '"latitude":1' + "0" * 400
    ),
    "nested too deeply": stored(metadata={"a": 0}).replace('"a":0', '"a":' + "[" * 200 + "]" * 200),
    "lone high surrogate": stored(userAgent="x").replace('"x"', r'"\ud800"'),
    "lone low surrogate": stored(userAgent="x").replace('"x"', r'"\udc00"'),
    "high surrogate then not low": stored(userAgent="x").replace('"x"', r'"\ud800\u0041"'),
    "bad escape": stored(userAgent="x").replace('"x"', r'"\x41"'),
    "short \\u escape": stored(userAgent="x").replace('"x"', r'"\u12"'),
    "raw control character": stored(userAgent="x").replace('"x"', '"\x01"'),
    "trailing comma": stored().replace("}", ",}", 1),
    "leading zero": stored(metadata={"a": 0}).replace('"a":0', '"a":01'),
    "bad literal": stored(metadata={"a": True}).replace("true", "tru"),
    "NaN": stored(metadata={"a": 0}).replace('"a":0', '"a":NaN'),
    "unterminated string": '{"id":"abc',
}


@needs_fast
@pytest.mark.parametrize("name", list(BAD_PAYLOADS))
def test_what_the_scanner_cannot_take_exactly_is_refused(name: str) -> None:
    assert_refused(BAD_PAYLOADS[name])


@needs_fast
def test_every_truncation_is_refused() -> None:
    texts = [stored(), stored(metadata={"a": [1.5, {"b": 'x"}'}], "c": None}), ascii_json(base())]
    for text in texts:
        for end in range(len(text)):
            with pytest.raises(ValueError):
                fast_lines([text[:end]])
            assert outcome(csv_chunk, [text[:end]]) == outcome(reference, [text[:end]])


@needs_fast
def test_a_list_item_that_is_not_a_str_is_refused() -> None:
    for item in [None, b"{}", 1, {"id": "x"}]:
        with pytest.raises(ValueError):
            fast_lines([stored(), item])
    with pytest.raises(ValueError):
        fast_lines(["\ud800"])  # a str UTF-8 cannot carry (UnicodeEncodeError)
    with pytest.raises(TypeError):
        fast((stored(),))  # type: ignore
    assert fast_lines([]) == b""


@needs_fast
def test_random_edits_never_give_other_bytes() -> None:
    rng = random.Random(42)
    edits = [*'{}[]",:\\0123456789.eE+-tfnul ax', "\x00", "é", "\\u", "\\ud83d", ""]
    texts = [sorted_json(random_event(rng)) for _ in range(40)]
    for _ in range(4000):
        text = rng.choice(texts)
        at = rng.randrange(len(text) + 1)
        cut = rng.choice([0, 0, 1, 2])
        mutated = text[:at] + rng.choice(edits) + text[at + cut :]
        assert_never_differs([mutated])


def jcs_safe(value: Any) -> Any:
    """value without the integers RFC 8785 refuses (and the ingest service too)."""
    if isinstance(value, dict):
        return {k: jcs_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jcs_safe(v) for v in value]
    if type(value) is int and abs(value) > MAX_SAFE_INTEGER:
        return str(value)
    return value


@needs_fast
def test_rfc8785_payloads_never_give_other_bytes() -> None:
    """What JCS writes unlike orjson (1e-6 as 0.000001, keys in UTF-16 order) the
    scanner refuses, and csv_line encodes; all else it takes."""
    rng = random.Random(8785)
    payloads = [canonical_json(jcs_safe(random_event(rng, ALPHABET))) for _ in range(2000)]
    taken = 0
    for text in payloads:
        assert_never_differs([text])
        taken += isinstance(outcome(fast_lines, [text]), bytes)
    assert taken > len(payloads) // 2
    assert csv_chunk(payloads) == reference(payloads)


def test_csv_chunk_falls_back_on_a_refused_batch() -> None:
    good = [stored(), stored(actor={"type": "SYSTEM"})]
    spaced = json.dumps(base(), sort_keys=True)  # valid JSON, not canonical: refused
    assert csv_chunk([*good, spaced, *good]) == reference([*good, spaced, *good])
    broken = [*good, stored()[:-1]]
    assert outcome(csv_chunk, broken) == outcome(reference, broken)
    assert not isinstance(outcome(csv_chunk, broken), bytes)


def test_csv_chunk_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "_fast_csv_lines", None)
    batch = [stored(), stored(userAgent="=x,y")]
    assert csv_chunk(batch) == reference(batch)


async def test_the_csv_file_is_the_header_then_each_batch() -> None:
    batches = [[stored(), stored(location=None)], [], [stored(actor={"type": "SYSTEM"})]]

    async def source() -> AsyncIterator[list[str]]:
        for batch in batches:
            yield batch

    chunks = [chunk async for chunk in encode(FORMATS["CSV"], source())]
    assert chunks == [
        (",".join(CSV_COLUMNS) + "\r\n").encode(),
        *(reference(batch) for batch in batches),
    ]


def test_the_extension_is_built_when_required() -> None:
    if os.environ.get("AUDITLOG_REQUIRE_CSVFAST") != "1":
        pytest.skip("AUDITLOG_REQUIRE_CSVFAST=1 is not set")
    module = importlib.import_module("auditlog.exports._csvfast")  # ImportError fails the test
    assert formats._fast_csv_lines is module.csv_lines
