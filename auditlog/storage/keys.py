"""API keys: only a hash of the secret is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class ApiKeyRow:
    id: str
    workspace_id: str | None
    role: str
    name: str | None
    secret_hash: bytes
    created_at: datetime
    revoked_at: datetime | None


_COLUMNS = "id, workspace_id, role, name, secret_hash, created_at, revoked_at"


def _row(record: asyncpg.Record) -> ApiKeyRow:
    return ApiKeyRow(
        id=record["id"],
        workspace_id=record["workspace_id"],
        role=record["role"],
        name=record["name"],
        secret_hash=bytes(record["secret_hash"]),
        created_at=record["created_at"],
        revoked_at=record["revoked_at"],
    )


async def insert_api_key(
    conn: asyncpg.Connection,
    *,
    key_id: str,
    workspace_id: str | None,
    role: str,
    name: str | None,
    secret_hash: bytes,
) -> ApiKeyRow:
    record = await conn.fetchrow(
        f"""INSERT INTO api_keys (id, workspace_id, role, name, secret_hash)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}""",
        key_id,
        workspace_id,
        role,
        name,
        secret_hash,
    )
    assert record is not None
    return _row(record)


async def read_api_key(conn: asyncpg.Connection, key_id: str) -> ApiKeyRow | None:
    record = await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1", key_id)
    return _row(record) if record else None


async def revoke_api_key(conn: asyncpg.Connection, key_id: str) -> tuple[ApiKeyRow, bool] | None:
    """Mark a key revoked: (the key, whether this call revoked it), or None if unknown.

    A key already revoked keeps its first revocation time and reports False.
    """
    record = await conn.fetchrow(
        f"""UPDATE api_keys SET revoked_at = now()
            WHERE id = $1 AND revoked_at IS NULL RETURNING {_COLUMNS}""",
        key_id,
    )
    if record is not None:
        return _row(record), True
    existing = await read_api_key(conn, key_id)
    return (existing, False) if existing is not None else None


async def read_valid_key_ids(conn: asyncpg.Connection, key_ids: list[str]) -> set[str]:
    """Those of key_ids that exist and are not revoked: one query for any number."""
    rows = await conn.fetch(
        "SELECT id FROM api_keys WHERE id = ANY($1::text[]) AND revoked_at IS NULL", key_ids
    )
    return {row["id"] for row in rows}
