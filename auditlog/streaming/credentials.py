"""Destination credentials, encrypted at rest with a key derived from AUDITLOG_SECRET_KEY.

Fernet (AES-128-CBC + HMAC-SHA256) under a key derived with HKDF, so the same
secret key can also sign cursors and links without the uses sharing a key.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from auditlog.errors import ConfigError


class CredentialBox:
    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ConfigError("AUDITLOG_SECRET_KEY: needed to encrypt destination credentials")
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"auditlog",
            info=b"auditlog stream destination credentials v1",
        ).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, secrets: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(orjson.dumps(secrets))

    def open(self, token: bytes) -> dict[str, Any]:
        try:
            value: dict[str, Any] = orjson.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise ConfigError(
                "destination credentials cannot be decrypted: AUDITLOG_SECRET_KEY changed?"
            ) from None
        return value
