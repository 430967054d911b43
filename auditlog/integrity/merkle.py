"""RFC 9162 Merkle trees (section 2.1): hashes, the shape of proofs, verification.

Pure functions, no I/O. A proof is planned as a list of leaf ranges whose
tree hashes (MTH) it carries, in RFC order; `subtrees_of` breaks each range
into the complete subtrees the store keeps, so a proof costs O(log n) reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a complete subtree given its 2**h bottom hashes, left to right."""
    sha256 = hashlib.sha256  # inlined node_hash: a seal computes about one per leaf
    level = list(hashes)
    while len(level) > 1:
        pairs = iter(level)
        level = [
            sha256(b"\x01" + left + right).digest()
            for left, right in zip(pairs, pairs, strict=True)
        ]
    return level[0]


def split_hashes(blob: bytes) -> list[bytes]:
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


Range = tuple[int, int]  # leaves [start, end)
Subtree = tuple[int, int]  # (start, height): the complete subtree of 2**height leaves at start


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """PATH(index, D[0:size]) as the ranges whose hashes it lists, in RFC order."""
    if not 0 <= index < size:
        raise ValueError("index must be below size")
    out: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = largest_power_of_two_below(end - start)
        if index < start + k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start = start + k
    out.reverse()  # the recursion appends on the way back up: deepest first
    return out


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """PROOF(old_size, D[0:new_size]) as ranges, in RFC order (section 2.1.4.1)."""
    if not 0 < old_size <= new_size:
        raise ValueError("sizes must satisfy 0 < old_size <= new_size")
    if old_size == new_size:
        return []
    out: list[Range] = []
    start, end, m, complete = 0, new_size, old_size, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                out.append((start, end))
            break
        k = largest_power_of_two_below(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, complete = start + k, m - k, False
    out.reverse()
    return out


def subtrees_of(start: int, end: int) -> list[Subtree]:
    """The complete subtrees whose roots make MTH(D[start:end]), left to right.

    `start` is a multiple of the largest power of two not above end - start, as
    every range of a proof or a root is.
    """
    out: list[Subtree] = []
    while end > start:
        n = end - start
        size = 1 << (n.bit_length() - 1)  # the largest power of two <= n
        out.append((start, size.bit_length() - 1))
        start += size
    return out


def range_hash(start: int, end: int, subtree: Callable[[int, int], bytes]) -> bytes:
    """MTH(D[start:end]) from the roots of its complete subtrees."""
    if end == start:
        return EMPTY_ROOT
    parts = [subtree(s, h) for s, h in subtrees_of(start, end)]
    # MTH folds from the right: the first (largest) subtree pairs with the rest.
    acc = parts[-1]
    for part in reversed(parts[:-1]):
        acc = node_hash(part, acc)
    return acc


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2."""
    if index >= size or size <= 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2."""
    if old_size <= 0 or old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root starts the path
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
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
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
