"""The per-request GraphQL context: services, the caller, a request id."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from strawberry.extensions import SchemaExtension
from strawberry.types import Info as StrawberryInfo

from auditlog.auth import SessionTokens
from auditlog.cursors import CursorCodec
from auditlog.errors import AuthError
from auditlog.integrity.keys import SigningKeys
from auditlog.model import Principal
from auditlog.services.exports import ExportServices
from auditlog.streaming.tail import LiveHub


class ApiServices(ExportServices, Protocol):
    """What the API reads from the process: what exports need (it hands them these
    services) and more. The runtime's Services has all of it, and the schema need not
    know the runtime that wires it."""

    @property
    def cursors(self) -> CursorCodec: ...

    @property
    def sessions(self) -> SessionTokens: ...

    @property
    def signing_keys(self) -> SigningKeys: ...

    @property
    def live(self) -> LiveHub | None: ...


@dataclass
class Context:
    services: ApiServices
    principal: Principal | None
    request_id: str
    request: Any = None
    response: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    connection_params: dict[str, Any] | None = None  # a websocket's connection_init payload
    # A websocket's `Bearer ...` from connection_init: authorized again for each operation.
    authorization: str | None = None

    def reader_workspace(self) -> str:
        """The caller's workspace, in a field that IsReader guards (schema/permissions.py);
        the same check again, so a field left unguarded refuses rather than leaks."""
        if self.principal is None:
            raise AuthError("authentication required")
        return self.principal.require_reader()


Info = StrawberryInfo[Context, None]


_memo: ContextVar[dict[str, Any] | None] = ContextVar("auditlog_operation_memo", default=None)


class OperationMemo(SchemaExtension):
    """A fresh memo for every operation, for work its aliased fields may share (a
    websocket's operations share one Context, so Context.extra would not do)."""

    def on_operation(self) -> Iterator[None]:
        token = _memo.set({})
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):  # ended in another context
                _memo.reset(token)


def operation_memo() -> dict[str, Any]:
    """This operation's memo (an empty one, not kept, outside any operation)."""
    memo = _memo.get()
    return memo if memo is not None else {}
