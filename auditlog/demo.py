"""Demo data: the ENTERPRISE workspace `demo` with about 5,000 realistic events."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from auditlog.catalog import CATALOG
from auditlog.services.ingest import Ingestor

DEMO_WORKSPACE = "demo"

_PEOPLE = [
    ("Ada Lovelace", "ada"), ("Grace Hopper", "grace"), ("Alan Turing", "alan"),
    ("Katherine Johnson", "katherine"), ("Linus Pauling", "linus"), ("Hedy Lamarr", "hedy"),
    ("Margaret Hamilton", "margaret"), ("Tim Berners-Lee", "tim"), ("Barbara Liskov", "barbara"),
    ("Donald Knuth", "donald"), ("Frances Allen", "frances"), ("Ken Thompson", "ken"),
    ("Radia Perlman", "radia"), ("Edsger Dijkstra", "edsger"), ("Shafi Goldwasser", "shafi"),
    ("Whitfield Diffie", "whitfield"), ("Joan Clarke", "joan"), ("John McCarthy", "john"),
]  # fmt: skip

# Public addresses in ranges MaxMind's test database and real databases locate
# in several countries (with the default, DB-IP's country data: GB, SE, US, CN, GI).
_HOME_IPS = [
    "81.2.69.142", "81.2.69.160", "89.160.20.112", "89.160.20.128", "216.160.83.56",
    "2.125.160.216", "67.43.156.1", "175.16.199.1", "202.196.224.1", "217.65.48.1",
]  # fmt: skip
_UNUSUAL_IPS = ["175.16.199.5", "175.16.199.77", "202.196.224.9"]

_USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
]

_FILES = ["q3-report.pdf", "roadmap-2027.key", "payroll-nov.xlsx", "contract-acme.docx",
          "design-system.fig", "board-deck.pptx", "customers.csv", "incident-2311.md"]  # fmt: skip


def _targets(action: str, rng: random.Random) -> list[dict[str, Any]]:
    if action.startswith(("file.", "folder.")):
        name = rng.choice(_FILES)
        kind = "folder" if action.startswith("folder.") else "file"
        return [{"type": kind, "id": f"{kind[0]}_{rng.randint(100, 999)}", "name": name}]
    if action.startswith("workspace.user."):
        name, handle = rng.choice(_PEOPLE)
        return [{"type": "user", "id": f"u_{handle}", "name": name}]
    if action.startswith(("mailbox.", "shared_inbox.", "mail.")):
        box = rng.choice(["support", "sales", "billing", "security"])
        return [{"type": "mailbox", "id": f"mb_{box}", "name": f"{box}@acme.io"}]
    if action.startswith("ai."):
        return [{"type": "ai_workflow", "id": f"wf_{rng.randint(1, 40)}", "name": "Summarise"}]
    return []


def _metadata(action: str, rng: random.Random) -> dict[str, Any]:
    if action == "user.login.failed":
        return {"reason": rng.choice(["invalid_password", "invalid_2fa_code", "locked"])}
    if action == "user.login.success":
        return {"method": rng.choice(["password", "sso", "passkey"])}
    if action == "file.uploaded":
        return {"sizeBytes": rng.randint(1_000, 50_000_000)}
    if action == "workspace.user.role_changed":
        return {"from": "member", "to": rng.choice(["admin", "owner"])}
    if action == "ai.api_key.used":
        return {"model": "aibams-large", "tokens": rng.randint(100, 20_000)}
    return {}


def demo_events(
    count: int = 5000, seed: int = 7, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Events over the last 30 days, oldest first, across all five categories."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    actions = [e.action for e in CATALOG if not e.action.startswith("audit_log.")]
    weights = [12 if a.startswith("user.login") else 3 if a.startswith("file.") else 1
               for a in actions]  # fmt: skip
    homes = {handle: (rng.choice(_HOME_IPS), rng.choice(_USER_AGENTS)) for _, handle in _PEOPLE}
    events: list[dict[str, Any]] = []
    for _ in range(count):
        name, handle = rng.choice(_PEOPLE)
        action = rng.choices(actions, weights)[0]
        ip, ua = homes[handle]
        if rng.random() < 0.1:
            ip, ua = rng.choice(_HOME_IPS), rng.choice(_USER_AGENTS)
        occurred = now - timedelta(seconds=rng.randint(60, 30 * 86400))
        events.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "occurredAt": occurred.isoformat(),
                "action": action,
                "actor": {
                    "type": "USER",
                    "id": f"u_{handle}",
                    "name": name,
                    "email": f"{handle}@acme.io",
                },
                "targets": _targets(action, rng),
                "ipAddress": ip,
                "userAgent": ua,
                "metadata": _metadata(action, rng),
            }
        )
    # A few failed logins on one account from a country it never signs in from.
    for minutes in (95, 93, 90, 88, 85):
        events.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "occurredAt": (now - timedelta(minutes=minutes)).isoformat(),
                "action": "user.login.failed",
                "actor": {
                    "type": "USER",
                    "id": "u_ada",
                    "name": "Ada Lovelace",
                    "email": "ada@acme.io",
                },
                "ipAddress": rng.choice(_UNUSUAL_IPS),
                "userAgent": "python-requests/2.32.3",
                "metadata": {"reason": "invalid_password"},
            }
        )
    events.sort(key=lambda e: e["occurredAt"])
    return events


async def load_demo_events(ingestor: Ingestor, count: int = 5000) -> int:
    """Ingest the demo events (idempotent: fixed ids, a second run stores nothing)."""
    events = demo_events(count)
    accepted = 0
    for start in range(0, len(events), 1000):
        result = await ingestor.ingest(events[start : start + 1000], DEMO_WORKSPACE)
        accepted += result.accepted
    return accepted
