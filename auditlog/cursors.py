"""Opaque cursors: a position in the log, bound to one workspace, signed.

A cursor carries (occurred_at, seq) for newest-first paging and (xid, seq) for
resuming in ingest order, so one cursor works with the query API and with the
live tail's `after`. The signature binds it to the workspace: a cursor from
another workspace, or an altered one, is refused as malformed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from auditlog.errors import BadInputError

_VERSION = "1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Cursor:
    occurred_at: datetime
    seq: int
    xid: int


class CursorCodec:
    def __init__(self, secret_key: str) -> None:
        key = hashlib.sha256(b"auditlog-cursor:" + secret_key.encode()).digest()
        # Keyed once: each signature copies this state (a page signs 50 cursors).
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def _sign(self, workspace_id: str, body: str) -> str:
        mac = self._keyed.copy()
        mac.update(f"{workspace_id}|{body}".encode())
        return base64.urlsafe_b64encode(mac.digest()[:12]).decode().rstrip("=")

    def encode(self, workspace_id: str, occurred_at: datetime, seq: int, xid: int) -> str:
        micros = (occurred_at - _EPOCH) // _MICRO
        body = f"{_VERSION}.{micros}.{seq}.{xid}"
        raw = f"{body}.{self._sign(workspace_id, body)}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def decode(self, workspace_id: str, cursor: str, argument: str) -> Cursor:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            raw = base64.urlsafe_b64decode(padded.encode()).decode()
            version, micros, seq, xid, mac = raw.split(".")
            body = f"{version}.{micros}.{seq}.{xid}"
            if version != _VERSION or not hmac.compare_digest(mac, self._sign(workspace_id, body)):
                raise ValueError
            when = _EPOCH + int(micros) * _MICRO
            return Cursor(occurred_at=when, seq=int(seq), xid=int(xid))
        except (ValueError, UnicodeDecodeError, OverflowError):
            raise BadInputError(argument, "is not a valid cursor for this workspace") from None
