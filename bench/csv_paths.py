"""CSV encoding paths of an export part (not a test): the C scanner (_csvfast) against
the pure-Python reference (orjson + csv_line) and a library path (msgspec decoding
into a Struct whose JSON fields stay `msgspec.Raw`, cells joined in Python), on
10,000-row chunks of stored payloads (the demo generator's events prepared by the
ingest service's own validation, as bench/ocsf.py does), median of the rounds.

    python -m bench.csv_paths [--rows 10000] [--rounds 7]      (needs: pip install msgspec)

The export benchmark's floor for the same part is raw `COPY TO` of 10,000 rows
(about 40 ms on the development machine, docs/benchmarks.md#exports): a path that
spends more than that in Python alone cannot keep a part within 2x of it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import msgspec

from auditlog.exports import formats
from bench.ocsf import stored_payloads

_EMPTY: dict[str, str | None] = {}


class Actor(msgspec.Struct):
    type: str
    id: str | None = None
    name: str | None = None
    email: str | None = None


class Place(msgspec.Struct):
    city: str | None = None
    region: str | None = None
    country: str | None = None


class Device(msgspec.Struct):
    browser: str | None = None
    os: str | None = None
    device: str | None = None


class Event(msgspec.Struct, rename="camel"):
    id: str
    occurred_at: str
    category: str
    action: str
    actor: Actor
    targets: msgspec.Raw = msgspec.Raw(b"[]")
    ip_address: str | None = None
    location: Place | None = None
    device: Device | None = None
    user_agent: str | None = None
    metadata: msgspec.Raw = msgspec.Raw(b"{}")


_decode = msgspec.json.Decoder(list[Event]).decode
_NONE_PLACE, _NONE_DEVICE = Place(), Device()


def _raw_cell(raw: msgspec.Raw, empty: str) -> str:
    text = bytes(raw).decode()
    return formats.text_cell(empty if text == "null" else text)


def msgspec_chunk(batch: list[str]) -> bytes:
    text = cell = formats.text_cell
    out: list[str] = []
    for e in _decode(("[" + ",".join(batch) + "]").encode()):
        a, p, d = e.actor, e.location or _NONE_PLACE, e.device or _NONE_DEVICE
        cells = (
            e.id,
            e.occurred_at,
            e.category,
            e.action,
            a.type,
            text(a.id),
            text(a.name),
            text(a.email),
            _raw_cell(e.targets, "[]"),
            cell(e.ip_address),
            cell(p.city),
            cell(p.region),
            cell(p.country),
            cell(d.browser),
            cell(d.os),
            cell(d.device),
            cell(e.user_agent),
            _raw_cell(e.metadata, "{}"),
        )
        out.append(",".join(cells) + "\r\n")
    return "".join(out).encode()


def python_chunk(batch: list[str]) -> bytes:
    return "".join([formats.csv_line(text) for text in batch]).encode()


def timed(encode: Callable[[list[str]], bytes], batch: list[str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        encode(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    batch = stored_payloads(args.rows)
    fast = formats._fast_csv_lines
    if fast is None:
        raise SystemExit("the C scanner is not built: pip install -e . first")
    reference = python_chunk(batch)
    assert fast(batch) == reference, "the C scanner disagrees with csv_line"
    same = msgspec_chunk(batch) == reference
    print(f"{len(batch):,} rows, median of {args.rounds} rounds (msgspec bytes equal: {same})")
    for name, encode in (
        ("C scanner (_csvfast)", fast),
        ("orjson + csv_line", python_chunk),
        ("msgspec Struct + Raw", msgspec_chunk),
    ):
        print(f"{name:<22} {timed(encode, batch, args.rounds):8.2f} ms")


if __name__ == "__main__":
    main()
