"""Domain exceptions. Expected failures carry a code the API layers map to answers."""

from __future__ import annotations

from dataclasses import dataclass


class AuditLogError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(AuditLogError):
    """A setting is missing or malformed; raised at start-up."""


class AuthError(AuditLogError):
    """No token, a bad token, or a revoked key (HTTP 401 / UNAUTHENTICATED)."""


class ForbiddenError(AuditLogError):
    """The caller's role or plan does not allow this (HTTP 403 / FORBIDDEN)."""


class NotFoundError(AuditLogError):
    """The thing does not exist for this caller (NOT_FOUND)."""


class RateLimitedError(AuditLogError):
    """Too many requests of one kind for now; `retry_after` seconds (RATE_LIMITED)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadInputError(AuditLogError):
    """An argument that can never succeed; `argument` names it (BAD_USER_INPUT)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.reason = message


@dataclass(frozen=True)
class FieldError:
    """One refusal of one event in an ingest batch."""

    index: int
    field: str
    message: str


class BatchRejected(AuditLogError):
    """An ingest batch failed validation: nothing of it is stored."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} invalid event(s)")
        self.errors = errors
