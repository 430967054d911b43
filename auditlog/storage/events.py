"""The event store: append (idempotent, COPY) and keyset reads.

Positions: every event has (occurred_at, seq) for newest-first reading, and
(xid, seq) for ingest order. Readers that resume in ingest order only read
below the safe watermark (SAFE_WATERMARK), so an event whose transaction
commits late is never skipped (docs/architecture.md).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import NamedTuple

import asyncpg

from auditlog.model import EventFilter, IPAddress, TimePosition
from auditlog.storage.database import (
    CUSTOM_PLANS,
    GENERIC_PLANS,
    acquire_with_plans,
    plan_mode_of,
)

# The safe watermark: the oldest transaction still running in the statement's
# snapshot that could have written to this database. pg_snapshot_xmin alone is
# cluster-wide, so a long write in another database of the same cluster would
# hold every reader back. A running transaction is skipped only when
# pg_stat_activity shows it in another database; one that ended since the
# snapshot, or runs here, or cannot be placed (a prepared transaction) stays
# a barrier until the next read. With no barrier, everything visible is final:
# later transactions get xids at or above the snapshot's xmax.
# On a hot standby (a read replica) pg_current_snapshot() is the replayed
# state, but lists no running transaction at all (in recovery PostgreSQL keeps
# them apart from xip; checked on 15: '725:727:' while 725 ran on the primary
# and 726 had committed), so there the watermark is the snapshot's xmin, the
# oldest transaction the standby has not seen end, in any database
# (tests/test_replicas.py). One scalar subquery: planned once, as before.
SAFE_WATERMARK = """(SELECT CASE WHEN pg_is_in_recovery()
    THEN pg_snapshot_xmin(pg_current_snapshot())
    ELSE coalesce(
    (SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
     WHERE xid(x) NOT IN (
         SELECT a.backend_xid FROM pg_stat_activity a
         WHERE a.backend_xid IS NOT NULL AND a.datid IS DISTINCT FROM
             (SELECT oid FROM pg_database WHERE datname = current_database()))),
    pg_snapshot_xmax(pg_current_snapshot())) END)"""


# One workspace ($1) in ingest order after ($2 xid, $3 seq), final rows only,
# inside retention ($5 or NULL), at most $4: the tail of every resuming reader.
INGEST_ORDER_AFTER = f"""FROM audit_events
    WHERE workspace_id = $1
      AND (xid, seq) > ($2::text::xid8, $3)
      AND xid < {SAFE_WATERMARK}
      AND ($5::timestamptz IS NULL OR occurred_at >= $5)
    ORDER BY xid, seq
    LIMIT $4"""


class EventRow(NamedTuple):
    """One event as written: indexed columns plus the canonical payload.

    A tuple in INSERT_COLUMNS order, so it goes to COPY as it is.
    """

    workspace_id: str
    occurred_at: datetime
    id: uuid.UUID
    received_at: datetime
    action: str
    category: str
    actor_type: str
    actor_id: str | None
    actor_email: str | None
    # The address's packed bytes (4 or 16) or the address itself: asyncpg's inet
    # encoder passes either to ipaddress.ip_address, which parses an address
    # object again from its text (7 us) but takes packed bytes at once (1 us).
    ip: IPAddress | bytes | None
    target_ids: list[str]
    payload: str


# Columns written at ingest, in COPY order; seq and xid come from their defaults.
INSERT_COLUMNS: tuple[str, ...] = EventRow._fields


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as read back: its positions and the stored payload text."""

    workspace_id: str
    occurred_at: datetime
    seq: int
    xid: int
    payload: str

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> StoredEvent:
        return cls(r["workspace_id"], r["occurred_at"], r["seq"], r["xid"], r["payload"])


async def ensure_partitions(conn: asyncpg.Connection, days: Sequence[date]) -> None:
    """Make sure a partition exists for every given day (created by the owner function)."""
    months = sorted({d.replace(day=1) for d in days})
    for month in months:
        await conn.execute("SELECT auditlog_ensure_partition($1)", month)


async def claim_event_ids(
    conn: asyncpg.Connection,
    workspace_ids: list[str],
    ids: list[uuid.UUID],
    occurred: list[datetime],
) -> set[tuple[str, uuid.UUID]]:
    """Record ids in the idempotency ledger; return those that were new.

    Call inside a transaction. A concurrent transaction claiming the same id
    makes this wait for it, then reports the id as taken: two identical batches
    racing store one copy. Ids are claimed in key order (workspace by code
    point, then id), so batches overlapping in any order cannot deadlock.

    Fast path: a batch of distinct ids is COPYed into the ledger inside a
    savepoint (a plain index insert per id). Only when one of them is already
    there (a retried or racing batch) is the savepoint rolled back and the
    batch claimed with INSERT ... ON CONFLICT DO NOTHING, which costs more per
    row (a speculative insertion each).
    """
    # uuid.UUID compares in Python; its int (the same order as PostgreSQL's) in C.
    rows = sorted(zip(workspace_ids, ids, occurred, strict=True), key=lambda r: (r[0], r[1].int))
    keys = {(r[0], r[1]) for r in rows}
    if len(keys) == len(rows):
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "audit_event_ids", records=rows, columns=("workspace_id", "id", "occurred_at")
                )
        except asyncpg.UniqueViolationError:
            pass  # rolled back to the savepoint: nothing of the batch is in the ledger
        else:
            return keys
    records = await conn.fetch(
        """INSERT INTO audit_event_ids (workspace_id, id, occurred_at)
           SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) AS u(w, i, t)
           ORDER BY w COLLATE "C", i
           ON CONFLICT DO NOTHING
           RETURNING workspace_id, id""",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
    )
    return {(r["workspace_id"], r["id"]) for r in records}


async def copy_events(conn: asyncpg.Connection, rows: Sequence[EventRow]) -> None:
    """COPY rows into audit_events in the given order (seq follows that order)."""
    await conn.copy_records_to_table(
        "audit_events",
        records=rows,
        columns=INSERT_COLUMNS,
    )


# remember_logins in one statement ($1 workspace; $2-$4 candidates; $5-$8 learned).
REMEMBER_LOGINS = """WITH learned AS (
    INSERT INTO actor_logins_seen (workspace_id, actor_key, kind, value, first_seen)
    SELECT $1, k, kind, v, min(t)
    FROM unnest($5::text[], $6::text[], $7::text[], $8::timestamptz[])
        AS u(k, kind, v, t)
    GROUP BY k, kind, v
    ORDER BY k COLLATE "C", kind, v COLLATE "C"
    ON CONFLICT (workspace_id, actor_key, kind, value) DO NOTHING
)
SELECT c.k AS actor_key, c.kind, c.v AS value
FROM unnest($2::text[], $3::text[], $4::text[]) AS c(k, kind, v)
CROSS JOIN LATERAL (
    SELECT FROM actor_logins_seen s
    WHERE s.workspace_id = $1 AND s.actor_key = c.k AND s.kind = c.kind
      AND s.value = c.v
    LIMIT 1) AS seen"""


async def remember_logins(
    conn: asyncpg.Connection,
    workspace_id: str,
    candidates: Sequence[tuple[str, str, str]],
    learned: Sequence[tuple[str, str, str, datetime]],
) -> set[tuple[str, str, str]]:
    """One round trip: which candidate (actor_key, kind, value) were already seen
    on successful logins before this statement, and remember `learned`, the
    (actor_key, kind, value) of this batch's successful logins with when.

    Only the batch's own values are looked up, one index probe each, so the cost
    does not grow with the workspace's history. (A plain join let the planner,
    misled by the unnest estimates, hash the workspace's whole history on every
    batch: 5.5 of 7.8 ms with 16,558 rows seen, growing with every login.)
    The SELECT reads the snapshot taken before the insert in the same
    statement, so what this batch teaches is not reported as seen.
    The insert is insert-only, in key order: a value already known is skipped
    without a lock, so concurrent batches of the same actors do not wait for
    each other.
    """
    records = await conn.fetch(
        REMEMBER_LOGINS,
        workspace_id,
        [c[0] for c in candidates],
        [c[1] for c in candidates],
        [c[2] for c in candidates],
        [s[0] for s in learned],
        [s[1] for s in learned],
        [s[2] for s in learned],
        [s[3] for s in learned],
    )
    return {(r["actor_key"], r["kind"], r["value"]) for r in records}


# The workspace's retention, read inside the statement (one round trip less than
# reading the workspace first); unlimited or unknown: no bound. Partitions are
# still pruned by it at run time.
_WORKSPACE_RETENTION = """occurred_at >= coalesce(
    (SELECT now() - make_interval(days => retention_days) FROM workspaces WHERE id = $1),
    '-infinity'::timestamptz)"""


def filter_sql(
    flt: EventFilter,
    args: list[object],
    retention_start: datetime | None,
    split: str | None = None,
) -> list[str]:
    """The WHERE conditions of a filter, its values appended to `args`: one
    definition for event pages and export plans alike."""

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    where: list[str] = []
    lower = flt.occurred_from
    if retention_start is not None and (lower is None or lower < retention_start):
        lower = retention_start
    if lower is not None:
        where.append(f"occurred_at >= {arg(lower)}")
    if flt.occurred_to is not None:
        where.append(f"occurred_at < {arg(flt.occurred_to)}")
    if flt.actor_email is not None:
        where.append(f"actor_email = {arg(flt.actor_email)}")
    if flt.actor_id is not None:
        where.append(f"actor_id = {arg(flt.actor_id)}")
    for column, values in (("category", flt.categories), ("action", flt.actions)):
        if values is None or column == split:
            continue
        if len(values) == 1:
            where.append(f"{column} = {arg(values[0])}")
        else:
            where.append(f"{column} = ANY({arg(values)}::text[])")
    if flt.ip_network is not None:
        net = flt.ip_network
        if net.num_addresses == 1:
            where.append(f"ip = {arg(net.network_address)}::inet")
        else:
            where.append(f"ip <<= {arg(net)}::cidr")
    if flt.target_id is not None:
        where.append(f"target_ids @> ARRAY[{arg(flt.target_id)}::text]")
    return where


def _split_list(flt: EventFilter) -> tuple[str | None, list[str] | None]:
    """The list filter to read as one index scan per value, if any has several values."""
    if flt.actions is not None and len(flt.actions) > 1:
        return "action", flt.actions
    if flt.categories is not None and len(flt.categories) > 1 and flt.actions is None:
        return "category", flt.categories
    return None, None


@dataclass(frozen=True, slots=True)
class PageBounds:
    """Which rows of a filtered log one read takes (see read_events_page)."""

    limit: int
    older_than: TimePosition | None = None
    newer_than: TimePosition | None = None
    oldest_first: bool = False
    retention_start: datetime | None = None
    workspace_retention: bool = False  # bound by the workspace's retention, read in SQL


PAGE_COLUMNS = "workspace_id, occurred_at, seq, xid::text::bigint AS xid, payload"


def page_query(
    workspace_id: str, flt: EventFilter, bounds: PageBounds, *, columns: str = PAGE_COLUMNS
) -> tuple[str, list[object]]:
    """The SQL and arguments of read_events_page (also what the benchmark EXPLAINs)."""
    split, values = _split_list(flt)
    args: list[object] = [workspace_id]
    where = ["workspace_id = $1", *filter_sql(flt, args, bounds.retention_start, split)]
    if bounds.workspace_retention:
        where.append(_WORKSPACE_RETENTION)
    older_than, newer_than = bounds.older_than, bounds.newer_than
    # The plain occurred_at bound beside each row comparison lets the planner prune
    # partitions (it does not prune on row comparisons).
    if older_than is not None:
        args += [older_than.occurred_at, older_than.seq]
        at, seq = f"${len(args) - 1}", f"${len(args)}"
        where.append(f"occurred_at <= {at} AND (occurred_at, seq) < ({at}, {seq})")
    if newer_than is not None:
        args += [newer_than.occurred_at, newer_than.seq]
        at, seq = f"${len(args) - 1}", f"${len(args)}"
        where.append(f"occurred_at >= {at} AND (occurred_at, seq) > ({at}, {seq})")
    order = "ASC" if bounds.oldest_first else "DESC"
    if split is not None:
        args.append(values)
        where.append(f"{split} = v.value")
        source = f"unnest(${len(args)}::text[]) AS v(value) CROSS JOIN LATERAL"
    args.append(bounds.limit)
    sql = f"""SELECT {columns} FROM audit_events WHERE {" AND ".join(where)}
              ORDER BY occurred_at {order}, seq {order} LIMIT ${len(args)}"""
    if split is not None:
        # One ordered index scan per value, each stopping at `limit`, then merged:
        # `= ANY(list)` cannot use an index in time order and would sort every match.
        sql = f"""SELECT e.* FROM {source} ({sql}) AS e
                  ORDER BY e.occurred_at {order}, e.seq {order} LIMIT ${len(args)}"""
    return sql, args


# A block of addresses is first looked for among this many newest events (see
# read_events_page).
BLOCK_WINDOW = 2000


def bounded_block(flt: EventFilter) -> bool:
    """An address block (not one address) whose other filters are read with one
    plan for every value (see generic_plans_suit), with no list read per value."""
    net = flt.ip_network
    return (
        net is not None
        and net.num_addresses > 1
        and _split_list(flt)[0] is None
        and generic_plans_suit(replace(flt, ip_network=None))
    )


def generic_plans_suit(flt: EventFilter) -> bool:
    """Whether one plan serves every value of this filter's parameters.

    With no filter, a date range, one actor, one address, or actions or
    categories, a page is one ordered index scan per partition (or per listed
    value) that stops at the page's size, whatever the values, and runtime
    pruning drops the partitions a range or cursor excludes. Two of those
    together, or a target, are planned for their values every time: how many
    events match each decides which index to walk. An address block alone is
    read in a bounded window first (`read_events_page`), which one plan serves.
    """
    if flt.target_id is not None:
        return False
    net = flt.ip_network
    if net is not None and net.num_addresses > 1:
        return bounded_block(flt)
    dimensions = [
        flt.actor_email is not None,
        flt.actor_id is not None,
        flt.categories is not None or flt.actions is not None,
        net is not None,
    ]
    return sum(dimensions) <= 1


def block_window_query(
    workspace_id: str, flt: EventFilter, bounds: PageBounds
) -> tuple[str, list[object]]:
    """An address block's matches among the BLOCK_WINDOW next events of the log
    filtered by everything else (see read_events_page)."""
    assert flt.ip_network is not None
    inner, args = page_query(
        workspace_id,
        replace(flt, ip_network=None),
        replace(bounds, limit=BLOCK_WINDOW),
        # The raw xid: converted for the page's rows only, not for the whole window.
        columns="workspace_id, occurred_at, seq, xid, payload, ip",
    )
    order = "ASC" if bounds.oldest_first else "DESC"
    args += [flt.ip_network, bounds.limit]
    sql = f"""SELECT {PAGE_COLUMNS} FROM ({inner}) AS recent
              WHERE ip <<= ${len(args) - 1}::cidr
              ORDER BY occurred_at {order}, seq {order} LIMIT ${len(args)}"""
    return sql, args


def page_plans(flt: EventFilter) -> str:
    """The plan mode of a page's statements: generic where one plan serves every
    value (`generic_plans_suit`), custom otherwise.

    Planning a page statement for its values costs more than running it: the
    planner considers every partition's 8 indexes (0.53 ms for 14 monthly
    partitions, against 0.11 ms of execution, docs/benchmarks.md).
    """
    return GENERIC_PLANS if generic_plans_suit(flt) else CUSTOM_PLANS


@asynccontextmanager
async def page_connection(
    pool: asyncpg.Pool, flt: EventFilter
) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for the statements of one page, planned as `page_plans`
    says (the session's mode, set on acquire only when it differs)."""
    async with acquire_with_plans(pool, page_plans(flt)) as conn:
        yield conn


async def _fetch_with_custom_plan(
    conn: asyncpg.Connection, sql: str, args: list[object]
) -> list[asyncpg.Record]:
    """`sql` planned for its values, on a connection that may plan generically."""
    if plan_mode_of(conn) == CUSTOM_PLANS:
        return list(await conn.fetch(sql, *args))
    if conn.is_in_transaction():  # a caller's: custom plans for the rest of it
        await conn.execute(f"SET LOCAL plan_cache_mode = {CUSTOM_PLANS}")
        return list(await conn.fetch(sql, *args))
    async with conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL plan_cache_mode = {CUSTOM_PLANS}")
        return list(await conn.fetch(sql, *args))


async def read_events_page(
    conn: asyncpg.Connection,
    workspace_id: str,
    flt: EventFilter,
    *,
    limit: int,
    older_than: TimePosition | None = None,
    newer_than: TimePosition | None = None,
    oldest_first: bool = False,
    retention_start: datetime | None = None,
    workspace_retention: bool = False,
) -> list[StoredEvent]:
    """At most `limit` events strictly between the positions, returned newest first.

    The `limit` rows taken are the newest ones, or with `oldest_first` the oldest
    ones (for paging backwards from `newer_than`); the result is newest first either way.
    """
    bounds = PageBounds(
        limit, older_than, newer_than, oldest_first, retention_start, workspace_retention
    )
    records = None
    if bounded_block(flt):
        # An address block: how many events it holds decides between walking the
        # time-ordered key and its ip index, so no one plan fits every block.
        # First its matches among the BLOCK_WINDOW next events: if they fill the
        # page, they are the page (any earlier match would be in the window). A
        # rare block does not, and is read again with a plan made for it.
        sql, args = block_window_query(workspace_id, flt, bounds)
        records = await conn.fetch(sql, *args)
        if len(records) < limit:
            sql, args = page_query(workspace_id, flt, bounds)
            records = await _fetch_with_custom_plan(conn, sql, args)
    if records is None:
        sql, args = page_query(workspace_id, flt, bounds)
        records = await conn.fetch(sql, *args)
    rows = [StoredEvent.from_record(r) for r in records]
    if oldest_first:
        rows.reverse()
    return rows


async def read_event_by_id(
    conn: asyncpg.Connection,
    workspace_id: str,
    event_id: uuid.UUID,
    retention_start: datetime | None = None,
) -> StoredEvent | None:
    """One event by id; the ledger gives its occurred_at so one partition is read."""
    record = await conn.fetchrow(
        """SELECT e.workspace_id, e.occurred_at, e.seq, e.xid::text::bigint AS xid, e.payload
           FROM audit_event_ids i
           JOIN audit_events e
             ON e.workspace_id = i.workspace_id AND e.occurred_at = i.occurred_at AND e.id = i.id
           WHERE i.workspace_id = $1 AND i.id = $2
             AND ($3::timestamptz IS NULL OR e.occurred_at >= $3)""",
        workspace_id,
        event_id,
        retention_start,
    )
    return StoredEvent.from_record(record) if record is not None else None


async def read_safe_watermark(conn: asyncpg.Connection) -> tuple[int, int]:
    """A position (xid, seq) such that everything after it is new from now on.

    Every event with an xid below the watermark is final; everything at or
    above it is still being written or not yet begun. Starting "after
    (watermark, 0)" therefore skips nothing new and replays nothing old, even
    while a long transaction holds the watermark back.
    """
    watermark = await conn.fetchval(f"SELECT ({SAFE_WATERMARK})::text::bigint")
    return (int(watermark), 0)
