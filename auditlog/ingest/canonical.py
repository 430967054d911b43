"""One canonical JSON form for stored payloads: RFC 8785 (JCS), exactly.

Sorted keys, no insignificant white space, UTF-8, timestamps in one fixed UTC
format. A payload serialised here is reproducible byte for byte from its parsed
JSON (`auditlog.jcs.jcs_dumps`), so a hash of each event (and of each prefix of
the log) can be computed at any time.

orjson writes most payloads exactly as JCS does and is several times faster;
it differs only on floats (`1.0`, `-0.0`, `1e+16`, `1e-6`), integers beyond
+-(2**53 - 1) (which JCS cannot carry) and the order of keys holding characters
from U+E000 up (JCS sorts UTF-16 code units). Ingest finds those while it
validates, so that most events take orjson's path and the rest `jcs_dumps`.
"""

from __future__ import annotations

from typing import Any

import orjson

from auditlog.jcs import MAX_SAFE_INTEGER, jcs_dumps, number_text


def float_for_orjson(value: float) -> int | float | None:
    """How to hand a finite float to orjson so that it writes JCS: an int for an
    integral float in the safe range (JCS writes 1.0 as `1`, -0.0 as `0`), the
    float itself when orjson already writes its JCS text, None when only
    `jcs_dumps` does."""
    if value.is_integer() and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return int(value)
    # Without an exponent (1e-4 <= |x| < 1e16), repr of a non-integral float is
    # its JCS text (fixed notation, shortest digits): most floats skip number_text.
    shortest = float.__repr__(value)
    jcs = shortest if "e" not in shortest else number_text(value)
    return value if orjson.dumps(value) == jcs.encode() else None


def canonical_json(value: Any, *, plain: bool = False) -> str:
    """value's RFC 8785 text.

    `plain`: the caller vouches that value holds no float orjson writes unlike
    JCS (see float_for_orjson), no integer beyond +-(2**53 - 1) and no object key
    with a character from U+E000 up; orjson's fast path then gives the same bytes.
    """
    if plain:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return jcs_dumps(value).decode()
