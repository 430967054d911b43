"""Error codes on GraphQL errors, and masking of everything unexpected.

Expected failures are raised as domain exceptions and carry
`extensions.code`; anything else is logged with the request id and shown as
an opaque server error that names only that id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from auditlog.errors import (
    AuthError,
    BadInputError,
    ForbiddenError,
    NotFoundError,
)

log = logging.getLogger("auditlog.graphql")


class QueryTooComplex(GraphQLError):
    """Raised by the limits (depth, aliases, cost) before any work is done."""

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "QUERY_TOO_COMPLEX"})


class RateLimited(Exception):
    pass


_CODES: dict[type[BaseException], str] = {
    AuthError: "UNAUTHENTICATED",
    ForbiddenError: "FORBIDDEN",
    BadInputError: "BAD_USER_INPUT",
    NotFoundError: "NOT_FOUND",
    RateLimited: "RATE_LIMITED",
}


def code_for(error: BaseException | None) -> str | None:
    for kind, code in _CODES.items():
        if isinstance(error, kind):
            return code
    return None


def _classify(error: GraphQLError, request_id: str) -> GraphQLError:
    original = error.original_error
    if original is None:
        # Parse and validation errors: the document itself is wrong.
        if not (error.extensions or {}).get("code"):
            error.extensions = {**(error.extensions or {}), "code": "GRAPHQL_VALIDATION_FAILED"}
        return error
    if isinstance(original, GraphQLError) and (original.extensions or {}).get("code"):
        error.extensions = {**(error.extensions or {}), **(original.extensions or {})}
        return error
    if error.path is None and code_for(original) is None:
        # Raised before execution (a variable value that cannot be coerced, such as
        # an unknown enum value): the request is wrong, and the message says where.
        error.extensions = {**(error.extensions or {}), "code": "BAD_USER_INPUT"}
        return error
    code = code_for(original)
    if code is not None:
        extensions: dict[str, Any] = {"code": code}
        if isinstance(original, BadInputError):
            extensions["argument"] = original.argument
        return GraphQLError(
            str(original),
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=original,
            extensions=extensions,
        )
    log.error(
        "unexpected error in request %s at %s",
        request_id,
        error.path,
        exc_info=(type(original), original, original.__traceback__),
    )
    return GraphQLError(
        f"Internal server error (request id {request_id})",
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
    )


class ErrorCodes(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is None or not result.errors:
            return
        context = self.execution_context.context
        request_id = getattr(context, "request_id", "-")
        result.errors = [_classify(e, request_id) for e in result.errors]
