"""Signed, expiring download links: a plain GET needs no header.

A link names the workspace, the export and the part (or `proof`, the export's
proof bundle), and carries its expiry and an HMAC over all four made with a key
derived from AUDITLOG_SECRET_KEY.
Changing any of them, or using the link after it expired, makes it invalid;
an invalid link is refused before anything is looked up, so the answer never
says whether the export exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import datetime
from urllib.parse import urlencode

PROOF = "proof"  # the last path segment of a proof bundle's link, in place of a part


class ExportLinks:
    def __init__(self, secret_key: str) -> None:
        self._key = hashlib.sha256(b"auditlog-export-link:" + secret_key.encode()).digest()

    def _signature(
        self, workspace_id: str, export_id: uuid.UUID, part: int | str, expires: int
    ) -> str:
        # A part number and PROOF never read alike, so neither link opens the other.
        message = f"{workspace_id}|{export_id}|{part}|{expires}".encode()
        mac = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def url(
        self,
        base_url: str,
        workspace_id: str,
        export_id: uuid.UUID,
        part: int,
        expires_at: datetime,
    ) -> str:
        expires = int(expires_at.timestamp())
        signature = self._signature(workspace_id, export_id, part, expires)
        query = urlencode({"expires": expires, "signature": signature})
        return f"{base_url.rstrip('/')}/v1/exports/{workspace_id}/{export_id}/{part}?{query}"

    def is_valid(
        self,
        workspace_id: str,
        export_id: str,
        part: str,
        expires: str,
        signature: str,
        now: datetime,
    ) -> bool:
        """True for an untouched link that has not expired; never raises on garbage."""
        try:
            parsed_id, parsed_part, parsed_expires = uuid.UUID(export_id), int(part), int(expires)
        except ValueError:
            return False
        if (
            str(parsed_id) != export_id
            or str(parsed_part) != part
            or str(parsed_expires) != expires
            or parsed_part < 1
        ):
            return False
        expected = self._signature(workspace_id, parsed_id, parsed_part, parsed_expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return False
        return now.timestamp() < parsed_expires

    def proof_url(
        self, base_url: str, workspace_id: str, export_id: uuid.UUID, expires_at: datetime
    ) -> str:
        expires = int(expires_at.timestamp())
        signature = self._signature(workspace_id, export_id, PROOF, expires)
        query = urlencode({"expires": expires, "signature": signature})
        return f"{base_url.rstrip('/')}/v1/exports/{workspace_id}/{export_id}/{PROOF}?{query}"

    def is_valid_proof(
        self, workspace_id: str, export_id: str, expires: str, signature: str, now: datetime
    ) -> bool:
        """True for an untouched proof link that has not expired; never raises on garbage."""
        try:
            parsed_id, parsed_expires = uuid.UUID(export_id), int(expires)
        except ValueError:
            return False
        if str(parsed_id) != export_id or str(parsed_expires) != expires:
            return False
        expected = self._signature(workspace_id, parsed_id, PROOF, parsed_expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return False
        return now.timestamp() < parsed_expires
