"""The checkpoint signing key: AUDITLOG_SIGNING_KEY, or one generated into the data folder.

The seed never leaves this module: it is not logged, not returned, and the
generated file is created with mode 0600 and linked into place whole, so a
process starting beside another never reads half a key. A rotation replaces
the file; processes that sign notice the change at their next seal.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from auditlog.config import Settings
from auditlog.errors import ConfigError
from auditlog.integrity.notes import NoteSigner

KEY_FILE = "signing_key"


def _decode_seed(text: str, where: str) -> bytes:
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        seed = b""
    if len(seed) != 32:
        raise ConfigError(f"{where}: must be the standard base64 of a 32-byte Ed25519 seed")
    return seed


def key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def _write_new_key(path: Path, *, replace: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        pass  # another process made it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)


def load_signer(settings: Settings, *, create: bool = True) -> NoteSigner:
    """The signer of checkpoints; ConfigError naming the variable or file when unusable."""
    if settings.signing_key:
        return NoteSigner(
            settings.log_name, _decode_seed(settings.signing_key, "AUDITLOG_SIGNING_KEY")
        )
    path = key_path(settings)
    if not path.exists():
        if not create:
            raise ConfigError(f"AUDITLOG_SIGNING_KEY is unset and {path} does not exist")
        _write_new_key(path, replace=False)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"AUDITLOG_SIGNING_KEY is unset and {path} cannot be read ({exc.strerror})"
        ) from None
    return NoteSigner(settings.log_name, _decode_seed(text, f"{path} (AUDITLOG_SIGNING_KEY unset)"))


@dataclass
class _Loaded:
    stamp: tuple[int, int] | None
    signer: NoteSigner


class SigningKeys:
    """The current signer, reloaded when a rotation replaced the key file."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loaded = _Loaded(self._stamp(), load_signer(settings))

    def _stamp(self) -> tuple[int, int] | None:
        if self._settings.signing_key:
            return None
        try:
            st = key_path(self._settings).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def current(self) -> NoteSigner:
        stamp = self._stamp()
        if stamp is not None and stamp != self._loaded.stamp:
            self._loaded = _Loaded(stamp, load_signer(self._settings, create=False))
        return self._loaded.signer


def rotate_signing_key(settings: Settings) -> tuple[NoteSigner, NoteSigner]:
    """Replace the generated key with a new one; (old, new). The old seed is gone after."""
    if settings.signing_key:
        raise ConfigError(
            "AUDITLOG_SIGNING_KEY is set: rotate by setting it to a new seed "
            "(the old verifier key stays listed once it has signed)"
        )
    old = load_signer(settings)
    _write_new_key(key_path(settings), replace=True)
    return old, load_signer(settings, create=False)
