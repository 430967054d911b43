"""Builds a small MaxMind City database for tests (mmdb-writer), so enrichment is
tested on any machine without MaxMind's files."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MmdbF64, MMDBWriter
from netaddr import IPSet

# network -> (city, region, country name, ISO code, latitude, longitude)
NETWORKS = {
    "81.2.69.0/24": ("London", "England", "United Kingdom", "GB", 51.5142, -0.0931),
    "89.160.20.0/24": ("Linköping", "Östergötland County", "Sweden", "SE", 58.4167, 15.6167),
    "175.16.199.0/24": ("Changchun", "Jilin Sheng", "China", "CN", 43.88, 125.3228),
    "216.160.83.0/24": ("Milton", "Washington", "United States", "US", 47.2513, -122.3149),
    # Coordinates RFC 8785 writes unlike orjson: integral ones, and one below 1e-5
    # (ranges bench/ingest.py does not send from, so its events keep their mix).
    "192.0.2.0/24": ("Greenwich", "England", "United Kingdom", "GB", 51.0, 0.0),
    "198.18.0.0/24": ("Cayambe", "Pichincha", "Ecuador", "EC", -0.000002, -78.0),
}


def build_city_mmdb(path: Path) -> Path:
    writer = MMDBWriter(ip_version=6, database_type="GeoIP2-City", ipv4_compatible=True)
    for network, (city, region, country, code, lat, lon) in NETWORKS.items():
        writer.insert_network(
            IPSet([network]),
            {
                "city": {"names": {"en": city}},
                "subdivisions": [{"names": {"en": region}, "iso_code": region[:3].upper()}],
                "country": {"names": {"en": country}, "iso_code": code},
                "location": {"latitude": MmdbF64(lat), "longitude": MmdbF64(lon)},
            },
        )
    writer.to_db_file(str(path))
    return path
