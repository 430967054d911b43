"""Location lookup cost per event, in process: `python -m bench.geoip`.

1. `GeoIP.lookup` over the addresses of `bench.ingest`'s 200,000 events (their
   cache cold at the start), with location off and with the country default,
   alternated for five rounds: microseconds per event.
2. One cached lookup, and uncached lookups of random public IPv4 and IPv6
   addresses, with the country default.
"""

from __future__ import annotations

import random
import statistics
import time
import timeit

import orjson

from auditlog.ingest.enrich import GeoIP
from bench.ingest import make_batches


def per_event(geo: GeoIP, ips: list[str], lookup_name: str = "lookup") -> float:
    lookup = getattr(geo, lookup_name)
    started = time.perf_counter()
    for ip in ips:
        lookup(ip)
    return (time.perf_counter() - started) / len(ips) * 1e6


def main() -> None:
    ips = [e["ipAddress"] for body in make_batches(200_000) for e in orjson.loads(body)]
    print(f"{len(ips):,} events, {len(set(ips)):,} distinct addresses")
    runs: dict[str, list[float]] = {"none": [], "default": []}
    for _ in range(5):
        for mode, values in runs.items():
            geo = GeoIP(None, quiet=True, country_default=mode == "default")
            values.append(per_event(geo, ips))
            geo.close()
    for mode, values in runs.items():
        rounded = ", ".join(f"{v:.3f}" for v in values)
        print(f"{mode:8}: median {statistics.median(values):.3f} us/event ({rounded})")
    geo = GeoIP(None, quiet=True)
    geo.lookup("81.2.69.142")
    cached = timeit.timeit(lambda: geo.lookup("81.2.69.142"), number=500_000) / 500_000 * 1e6
    print(f"cached  : {cached:.3f} us")
    rng = random.Random(7)
    v4 = [
        ".".join(str(rng.randrange(1, 224 if i == 0 else 256)) for i in range(4))
        for _ in range(50_000)
    ]
    v6 = [
        f"2a0{rng.randrange(10)}:{rng.randrange(65536):x}::{rng.randrange(65536):x}"
        for _ in range(20_000)
    ]
    print(f"uncached: {per_event(geo, v4, '_lookup_country'):.2f} us IPv4, "
          f"{per_event(geo, v6, '_lookup_country'):.2f} us IPv6")  # fmt: skip
    geo.close()


if __name__ == "__main__":
    main()
