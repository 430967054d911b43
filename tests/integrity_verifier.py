"""An independent verifier of the log's integrity claims, for the tests.

Written from the specifications alone so that a mistake shared with the
service cannot make both agree: RFC 9162 section 2.1 (Merkle tree hash,
inclusion and consistency verification), C2SP signed-note (verifier keys,
signature lines), C2SP tlog-checkpoint (the three body lines) and RFC 8785
through the independent `rfc8785` package. Nothing here imports the service's
integrity code, and every check answers True/False or raises `NotVerified`
instead of trusting anything it was given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

EM_DASH_SPACE = "\u2014 "
ED25519_TYPE = 0x01


class NotVerified(Exception):
    """A note, key or checkpoint that does not parse or whose signature does not verify."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# RFC 9162 2.1.1


def jcs(value: Any) -> bytes:
    return rfc8785.dumps(value)


def leaf_hash(entry: bytes) -> bytes:
    return sha256(b"\x00" + entry)


def event_leaf(payload: Any) -> bytes:
    """The leaf of an event: SHA-256(0x00 || JCS(payload)), payload as parsed JSON."""
    return leaf_hash(jcs(payload))


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def _split(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D) given the leaf hashes of D."""
    n = len(hashes)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(root_of_leaf_hashes(hashes[:k]), root_of_leaf_hashes(hashes[k:]))


def root_of_payloads(payloads: Sequence[Any]) -> bytes:
    return root_of_leaf_hashes([event_leaf(p) for p in payloads])


def inclusion_path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of 2.1.3.1, from leaf hashes: to check this verifier itself."""
    n = len(hashes)
    if n <= 1:
        return []
    k = _split(n)
    if m < k:
        return [*inclusion_path(m, hashes[:k]), root_of_leaf_hashes(hashes[k:])]
    return [*inclusion_path(m - k, hashes[k:]), root_of_leaf_hashes(hashes[:k])]


def consistency_path(m: int, hashes: Sequence[bytes], complete: bool = True) -> list[bytes]:
    """SUBPROOF(m, D[n], true) of 2.1.4.1, from leaf hashes: to check this verifier itself."""
    n = len(hashes)
    if m == n:
        return [] if complete else [root_of_leaf_hashes(hashes)]
    k = _split(n)
    if m <= k:
        return [*consistency_path(m, hashes[:k], complete), root_of_leaf_hashes(hashes[k:])]
    return [*consistency_path(m - k, hashes[k:], False), root_of_leaf_hashes(hashes[:k])]


# RFC 9162 2.1.3.2


def verify_inclusion(
    leaf: bytes, leaf_index: int, tree_size: int, path: Sequence[bytes], root: bytes
) -> bool:
    if leaf_index < 0 or leaf_index >= tree_size:
        return False
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# RFC 9162 2.1.4.2


def verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, proof: Sequence[bytes]
) -> bool:
    if first < 1 or first > second:
        return False
    if first == second:
        # The proof between equal sizes is empty (2.1.4.1): the roots must be equal.
        return len(proof) == 0 and first_hash == second_hash
    path = list(proof)
    if not path:
        return False
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


# C2SP signed-note and tlog-checkpoint


@dataclass(frozen=True)
class Key:
    name: str
    key_hash: bytes  # 4 bytes
    public_key: bytes  # 32 bytes


def _b64(text: str) -> bytes:
    """Standard base64, canonical only: nonzero padding bits (RFC 4648, 3.5) are refused,
    so that one signature has one spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NotVerified(f"not standard base64: {text!r}") from None
    if base64.b64encode(raw).decode() != text:
        raise NotVerified(f"not canonical base64: {text!r}")
    return raw


def parse_verifier_key(text: str) -> Key:
    """`<name>+<8 hex key hash>+<base64(0x01 || public key)>`, the hash checked."""
    parts = text.split("+", 2)  # the name has no '+'; base64 may
    if len(parts) != 3:
        raise NotVerified("a verifier key is <name>+<hash>+<key>")
    name, hash_hex, blob = parts
    if not name or any(c.isspace() for c in name):
        raise NotVerified("a key name is non-empty and has no white space")
    if len(hash_hex) != 8 or any(c not in "0123456789abcdef" for c in hash_hex):
        raise NotVerified("the key hash is 8 lower-case hex digits")
    raw = _b64(blob)
    if len(raw) != 33 or raw[0] != ED25519_TYPE:
        raise NotVerified("not an Ed25519 (type 0x01) verifier key")
    expected = sha256(name.encode() + b"\n" + raw)[:4]
    if expected.hex() != hash_hex:
        raise NotVerified("the key hash does not match the name and key")
    return Key(name, expected, raw[1:])


def _ed25519_ok(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def open_note_bytes(note: bytes, key: Key) -> bytes:
    """The note's text (body), once a signature line by `key` verifies over it.

    The text ends at the last blank line (as Go's note.Open splits); signature
    lines by other keys are ignored, as the signed-note spec allows.
    """
    split = note.rfind(b"\n\n")
    if split < 0 or not note.endswith(b"\n"):
        raise NotVerified("a note is text, a blank line and newline-terminated signature lines")
    text, signatures = note[: split + 1], note[split + 2 :]
    for raw_line in signatures[:-1].split(b"\n"):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError:
            raise NotVerified("a signature line is not UTF-8") from None
        if not line.startswith(EM_DASH_SPACE):
            raise NotVerified("a signature line starts with an em dash and a space")
        fields = line[len(EM_DASH_SPACE) :].split(" ")
        if len(fields) != 2:
            raise NotVerified("a signature line is '— <name> <base64 signature>'")
        name, blob = fields
        sig = _b64(blob)
        if len(sig) < 5:
            raise NotVerified("a signature holds a key hash and a signature")
        if name != key.name or sig[:4] != key.key_hash:
            continue
        if len(sig) == 4 + 64 and _ed25519_ok(key.public_key, sig[4:], text):
            return text
        raise NotVerified(f"the signature by {name} does not verify")
    raise NotVerified("no signature by this verifier key")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root: bytes


def parse_checkpoint_body(text: bytes) -> Checkpoint:
    try:
        lines = text.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise NotVerified("a checkpoint is UTF-8") from None
    if len(lines) < 4 or lines[-1] != "":
        raise NotVerified("a checkpoint body is origin, size and root lines, each ended by \\n")
    origin, size, root_text = lines[0], lines[1], lines[2]
    if not origin:
        raise NotVerified("a checkpoint has an origin")
    if not size.isascii() or not size.isdigit() or (size != "0" and size.startswith("0")):
        raise NotVerified("the tree size is a decimal number without leading zeros")
    root = _b64(root_text)
    if len(root) != 32:
        raise NotVerified("the root hash is 32 bytes")
    return Checkpoint(origin, int(size), root)


def open_checkpoint(note: str, verifier_key: str) -> Checkpoint:
    """The checkpoint a signed note states, once its signature by `verifier_key` verifies."""
    return parse_checkpoint_body(open_note_bytes(note.encode(), parse_verifier_key(verifier_key)))


def opens(note: bytes, verifier_key: str) -> bool:
    try:
        parse_checkpoint_body(open_note_bytes(note, parse_verifier_key(verifier_key)))
    except NotVerified:
        return False
    return True


def b64decode_all(values: Sequence[str]) -> list[bytes]:
    return [base64.b64decode(v, validate=True) for v in values]
