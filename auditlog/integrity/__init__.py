"""Integrity: RFC 9162 trees, C2SP signed notes, the signing key."""
