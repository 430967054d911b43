"""Error codes on GraphQL errors, and masking of everything unexpected.

Expected failures are raised as domain exceptions and carry
`extensions.code`; anything else is logged with the request id and shown as
an opaque server error that names only that id.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import asyncpg
import strawberry
from graphql import DocumentNode, GraphQLError, Node, VariableDefinitionNode
from graphql.language.parser import MAX_NESTING_DEPTH
from graphql.validation.rules.overlapping_fields_can_be_merged import MAX_COMPLEXITY_BUDGET
from graphql.validation.validate import ValidationAbortedError
from graphql.validation.validation_context import MAX_FRAGMENT_WORK
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.execution import PreExecutionError

from auditlog.errors import (
    AuthError,
    BadInputError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
)
from auditlog.schema.input_errors import input_argument

log = logging.getLogger("auditlog.graphql")


class QueryTooComplex(GraphQLError):
    """Raised by the limits (depth, aliases, cost) before any work is done."""

    def __init__(self, message: str, nodes: Sequence[Node] | None = None) -> None:
        super().__init__(message, nodes, extensions={"code": "QUERY_TOO_COMPLEX"})


_CODES: dict[type[BaseException], str] = {
    AuthError: "UNAUTHENTICATED",
    ForbiddenError: "FORBIDDEN",
    BadInputError: "BAD_USER_INPUT",
    NotFoundError: "NOT_FOUND",
    RateLimitedError: "RATE_LIMITED",
}


def code_for(error: BaseException | None) -> str | None:
    for kind, code in _CODES.items():
        if isinstance(error, kind):
            return code
    return None


def extensions_for(error: BaseException | None) -> dict[str, Any] | None:
    """`extensions` for an expected failure: its code, and the argument a bad
    input names or the seconds a rate-limited caller should wait; None for a
    fault."""
    code = code_for(error)
    if code is None:
        return None
    extensions: dict[str, Any] = {"code": code}
    if isinstance(error, BadInputError):
        extensions["argument"] = error.argument
    if isinstance(error, RateLimitedError):
        extensions["retryAfter"] = error.retry_after
    return extensions


def statement_timeout_message(seconds: float) -> str:
    return (
        f"the query ran past the statement timeout ({seconds:g} s) and was stopped: "
        "narrow the filter or the time range, or ask for smaller pages"
    )


def _classify(
    error: GraphQLError,
    request_id: str,
    document: DocumentNode | None,
    statement_timeout: float | None = None,
) -> GraphQLError:
    original = error.original_error
    if isinstance(original, GraphQLError) and (original.extensions or {}).get("code"):
        error.extensions = {**(error.extensions or {}), **(original.extensions or {})}
        return error
    if original is None or isinstance(original, GraphQLError):
        # The document or its variables are wrong; a wrong value names its argument.
        if (error.extensions or {}).get("code"):
            return error
        argument = input_argument(error, document)
        if argument is not None:
            error.extensions = {"code": "BAD_USER_INPUT", "argument": argument}
            error.message = f"{argument}: {error.message}"
        elif isinstance(error.nodes[0] if error.nodes else None, VariableDefinitionNode):
            error.extensions = {"code": "BAD_USER_INPUT"}
        else:
            error.extensions = {"code": "GRAPHQL_VALIDATION_FAILED"}
        return error
    message = str(original)
    extensions = extensions_for(original)
    if isinstance(original, asyncpg.QueryCanceledError) and statement_timeout is not None:
        # SQLSTATE 57014: the pool's statement_timeout cancelled it. The caller asked
        # for too much at once (or the database is overloaded): an answer, not a fault.
        message = statement_timeout_message(statement_timeout)
        extensions = {"code": "QUERY_TOO_COMPLEX", "limit": "statementTimeout"}
    if extensions is not None:
        return GraphQLError(
            message,
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
        document = self.execution_context.graphql_document
        services = getattr(context, "services", None)
        timeout = services.settings.statement_timeout_seconds if services else None
        result.errors = [_classify(e, request_id, document, timeout) for e in result.errors]


class AuditLogSchema(strawberry.Schema):
    async def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        result = await super().execute(*args, **kwargs)
        if result.errors:
            # A syntax error raised by the parser cache skips the extensions' result hooks.
            result.errors = _size_refusals([_parse_error_code(e) for e in result.errors])
        return result

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        """Websocket operations: the same refusals as over HTTP."""
        return _refusals_named(await super().stream(*args, **kwargs))

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Nothing here: ErrorCodes logs each unexpected error once, with its request
        id; expected ones (bad input, forbidden) are answers, not server faults."""


# graphql-core's own bounds, which a document can reach under the service's limits
# (schema/limits.py): each refusal names its bound, as those limits do.
MAX_VALIDATION_ERRORS = 100  # graphql-core's default max_errors, which Strawberry keeps
_TOO_MANY_ERRORS = "Too many validation errors"
_TOKEN_ERROR = "Syntax Error: Document contains more than"
_NESTING_ERROR = "Syntax Error: Document is nested too deeply"


async def _refusals_named(source: Any) -> AsyncIterator[Any]:
    async with contextlib.aclosing(source):
        try:
            async for result in source:
                errors = getattr(result, "errors", None)
                if isinstance(result, ExecutionResult) and errors:
                    result.errors = _size_refusals([_parse_error_code(e) for e in errors])
                yield result
        except GraphQLError as error:  # the parser cache raises what the parser refused
            yield PreExecutionError(data=None, errors=[_parse_error_code(error)])


def _parse_error_code(error: GraphQLError) -> GraphQLError:
    if (error.extensions or {}).get("code"):
        return error
    if error.message.startswith(_TOKEN_ERROR):
        from auditlog.schema.limits import MAX_TOKENS  # limits imports this module

        # graphql-core reports its token limit as a syntax error; it is a size refusal.
        return QueryTooComplex(f"the document is longer than {MAX_TOKENS} tokens, the limit")
    if error.message.startswith(_NESTING_ERROR):
        return QueryTooComplex(
            f"the document nests deeper than {MAX_NESTING_DEPTH} levels, the parser's limit"
        )
    error.extensions = {**(error.extensions or {}), "code": "GRAPHQL_PARSE_FAILED"}
    return error


def _size_refusals(errors: list[GraphQLError]) -> list[GraphQLError]:
    """A validation graphql-core aborted answers QUERY_TOO_COMPLEX alone, never its bare
    "Validation aborted.": the service's own limit errors when there are any, else
    one that names the bound that stopped it."""
    aborted = next((e for e in errors if isinstance(e, ValidationAbortedError)), None)
    if aborted is None:
        return errors
    ours = [e for e in errors if (e.extensions or {}).get("code") == "QUERY_TOO_COMPLEX"]
    if ours:
        return ours
    if aborted.message.startswith(_TOO_MANY_ERRORS):
        reason = (
            f"the document holds more than {MAX_VALIDATION_ERRORS} errors, the most "
            "validation reports"
        )
    else:
        reason = (
            "the document is too costly to validate: it repeats fields past "
            f"{MAX_COMPLEXITY_BUDGET} field comparisons, or spreads fragments and uses "
            f"variables past {MAX_FRAGMENT_WORK} times"
        )
    return [QueryTooComplex(reason)]
