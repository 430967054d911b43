"""Helpers shared by the export tests: create an export, download a file."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx

from tests.conftest import WorkspaceKeys

EXPORT_FIELDS = (
    "id format filter status rowCount createdAt expiresAt proofUrl files { part rowCount url }"
)
CREATE = f"""mutation ($input: CreateExportInput!) {{
  createExport(input: $input) {{ {EXPORT_FIELDS} }}
}}"""
ONE = f"query ($id: ID!) {{ export(id: $id) {{ {EXPORT_FIELDS} }} }}"
LIST = "query ($first: Int, $after: ID) { exports(first: $first, after: $after) { id } }"


async def create_export(
    ws: WorkspaceKeys, file_format: str, flt: dict[str, Any] | None, key: str | None = None
) -> dict[str, Any]:
    body = await ws.gql(CREATE, {"input": {"format": file_format, "filter": flt}}, key)
    assert "errors" not in body, body
    export: dict[str, Any] = body["data"]["createExport"]
    return export


async def download(http: httpx.AsyncClient, url: str) -> httpx.Response:
    """A plain GET of a signed link, with no Authorization header."""
    response = await http.get(url)
    assert response.status_code == 200, response.text
    return response


def csv_rows(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode(), newline="")))
