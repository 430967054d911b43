"""RFC 8785 JSON Canonicalization Scheme (JCS), in pure Python.

`jcs_dumps(value)` gives the one canonical UTF-8 text of a JSON value:

- no white space; object keys sorted by their UTF-16 code units (RFC 8785
  section 3.2.3), which differs from code point order only when a key holds
  a character from U+E000 to U+FFFF and another an astral character;
- strings escape only `"`, `\\` and the controls below U+0020 (`\\b \\t \\n
  \\f \\r` by name, the rest as `\\u00xx` in lower-case hex), everything else
  is written as itself;
- numbers are IEEE 754 doubles written as ECMAScript's Number.prototype.toString
  writes them (section 3.2.2.3): the shortest digits that round-trip, fixed
  notation for 1e-7 <= |x| < 1e21, `1e+21` / `1.5e-7` style exponents
  otherwise, `-0` as `0`. An int is taken as the double it denotes, and only
  within +-(2**53 - 1), where every integer is exactly one double.

It depends on nothing outside the standard library, so that a verifier can
recompute an event's canonical text (and hash) from its parsed JSON.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1

_ESCAPED = re.compile(r'[\x00-\x1f"\\]')
_ESCAPES = {chr(c): f"\\u{c:04x}" for c in range(0x20)} | {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _escape(match: re.Match[str]) -> str:
    return _ESCAPES[match.group()]


def string_text(value: str) -> str:
    """A JSON string literal as RFC 8785 writes it."""
    return '"' + _ESCAPED.sub(_escape, value) + '"'


def number_text(value: float) -> str:
    """A double as ECMAScript's Number.prototype.toString writes it; raises ValueError
    for NaN and the infinities, which JSON cannot carry."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a JSON number (RFC 8785 refuses NaN and infinities)")
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip (as ECMAScript requires);
    # float.__repr__ so that a subclass cannot change them.
    mantissa, _, exponent = float.__repr__(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    # value = 0.<digits> * 10**point, with no leading or trailing zero in digits
    point = len(whole) + (int(exponent) if exponent else 0)
    significant = digits.lstrip("0")
    point -= len(digits) - len(significant)
    digits = significant.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    e = point - 1
    exp = ("e+" if e >= 0 else "e-") + str(abs(e))
    if k == 1:
        return sign + digits + exp
    return sign + digits[0] + "." + digits[1:] + exp


def _key_order(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare as the code units do. surrogatepass lets a
    # lone surrogate through here; the final UTF-8 encoding refuses it.
    return key.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(string_text(value))
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueError(
                f"integer {value} is outside +-(2**53 - 1): RFC 8785 numbers are doubles, "
                "which cannot carry it exactly"
            )
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(number_text(value))
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
        out.append("{")
        for i, key in enumerate(sorted(value, key=_key_order)):
            if i:
                out.append(",")
            out.append(string_text(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON type")


def jcs_dumps(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 text of a JSON value (dict, list, tuple, str,
    int, float, bool, None). Raises ValueError for NaN, infinities, integers
    outside +-(2**53 - 1) and strings holding lone surrogates, TypeError for
    anything that is not JSON."""
    out: list[str] = []
    _write(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"a string holds a lone surrogate, which UTF-8 cannot carry: {exc}"
        ) from None
