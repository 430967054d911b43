"""C2SP signed notes and checkpoints (c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

A checkpoint body is three lines, `<origin>\\n<tree size>\\n<base64 root>\\n`;
the note adds a blank line and one signature line per key,
`— <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"  # the signed-note signature type of Ed25519
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space


class NoteError(ValueError):
    """A note, checkpoint or verifier key that does not parse or does not verify."""


def _strict_b64(text: str, what: str) -> bytes:
    """Standard base64 in its one canonical spelling (no stray padding bits)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise NoteError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def check_key_name(name: str) -> str:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError("a key name is non-empty, with no white space and no '+'")
    return name


@dataclass(frozen=True)
class VerifierKey:
    name: str
    public_key: bytes  # 32 bytes

    @property
    def hash(self) -> bytes:
        return key_hash(self.name, self.public_key)

    def encode(self) -> str:
        blob = base64.b64encode(ED25519 + self.public_key).decode()
        return f"{self.name}+{self.hash.hex()}+{blob}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<8 hex digits>+<base64 key>")
        name, hash_hex, blob = parts
        check_key_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
            expected = bytes.fromhex(hash_hex)
        except (binascii.Error, ValueError):
            raise NoteError("the verifier key's hash or key is not valid hex/base64") from None
        if len(raw) != 33 or raw[:1] != ED25519 or len(expected) != 4:
            raise NoteError("the verifier key is not an Ed25519 signed-note key")
        key = cls(name, raw[1:])
        if key.hash != expected:
            raise NoteError("the verifier key's hash does not match its name and key")
        return key

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class NoteSigner:
    """Signs notes with one Ed25519 key under one key name."""

    def __init__(self, name: str, seed: bytes) -> None:
        if len(seed) != 32:
            raise NoteError("an Ed25519 seed is 32 bytes")
        self.name = check_key_name(name)
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = VerifierKey(name, public)

    def __repr__(self) -> str:  # never the seed
        return f"NoteSigner({self.verifier.encode()})"

    def sign(self, body: str) -> str:
        if not body.endswith("\n"):
            raise NoteError("a note body ends with a newline")
        signature = self._key.sign(body.encode())
        blob = base64.b64encode(self.verifier.hash + signature).decode()
        return f"{body}\n{SIGNATURE_PREFIX}{self.name} {blob}\n"


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def open_checkpoint(note: str, keys: list[VerifierKey]) -> Checkpoint:
    """The checkpoint of a signed note, once a signature by one of `keys` verifies."""
    # As Go's note.Open: the signatures follow the last blank line.
    body, sep, signatures = note.rpartition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise NoteError("a signed note is a body, a blank line and signature lines")
    body += "\n"
    verified = False
    for line in signatures[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("a signature line starts with an em dash and a space")
        name, _, blob = line[len(SIGNATURE_PREFIX) :].rpartition(" ")
        raw = _strict_b64(blob, "a signature")
        for key in keys:
            if key.name == name and raw[:4] == key.hash and key.verify(body.encode(), raw[4:]):
                verified = True
    if not verified:
        raise NoteError("no signature by a known verifier key verifies")
    lines = body.split("\n")
    if len(lines) < 4:
        raise NoteError("a checkpoint body has an origin, a tree size and a root hash")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise NoteError("the checkpoint's tree size is not a decimal number")
    root = _strict_b64(root_text, "the checkpoint's root hash")
    if len(root) != 32:
        raise NoteError("the checkpoint's root hash is not 32 bytes")
    return Checkpoint(origin, int(size_text), root)
