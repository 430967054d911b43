"""OCSF mapping benchmark (not a test): the cost of one event's OCSF form.

The demo generator's events (every non-service action, realistic targets and
metadata) are turned into stored payloads by the ingest service's own
preparation (validation, device parsing, canonical JSON; no database, no
GeoIP), then timed two ways, the median of --rounds:

- `to_ocsf`: stored payload (a dict) to OCSF dict;
- text to bytes: stored JSON text to OCSF JSON bytes (parse, map, serialise),
  what an OCSF destination or export does for each event.

    python -m bench.ocsf [--events 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

import orjson

from auditlog.demo import demo_events
from auditlog.ingest.enrich import GeoIP
from auditlog.model import format_timestamp
from auditlog.ocsf import ocsf_json, to_ocsf
from auditlog.services.ingest import Ingestor


def stored_payloads(count: int) -> list[str]:
    now = datetime.now(UTC)
    ingestor = Ingestor(None, GeoIP(None, quiet=True))
    raw = demo_events(count, now=now)
    for event in raw:
        event["workspaceId"] = "bench"
    received = format_timestamp(now)
    texts: list[str] = []
    for start in range(0, len(raw), 1000):
        events = ingestor.validate(raw[start : start + 1000], "bench", now)
        for e in events:
            prepared = ingestor._prepare(ingestor._with_id(e, now), "bench")
            texts.append(ingestor._row(prepared, now, received).payload)
    return texts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    texts = stored_payloads(args.events)
    dicts = [orjson.loads(t) for t in texts]
    mapped, whole = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for payload in dicts:
            to_ocsf(payload)
        mapped.append((time.perf_counter() - started) / len(dicts))
        started = time.perf_counter()
        for text in texts:
            ocsf_json(text)
        whole.append((time.perf_counter() - started) / len(texts))
    print(f"{len(texts)} events, median of {args.rounds} rounds")
    print(f"to_ocsf:              {statistics.median(mapped) * 1e6:.2f} us/event")
    print(f"stored text -> bytes: {statistics.median(whole) * 1e6:.2f} us/event")


if __name__ == "__main__":
    main()
