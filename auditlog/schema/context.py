"""The per-request GraphQL context: services, the caller, a request id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info as StrawberryInfo

from auditlog.auth import Principal
from auditlog.errors import AuthError
from auditlog.runtime import Services


@dataclass
class Context:
    services: Services
    principal: Principal | None
    request_id: str
    request: Any = None
    response: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    connection_params: dict[str, Any] | None = None  # a websocket's connection_init payload
    # A websocket's `Bearer ...` from connection_init: authorized again for each operation.
    authorization: str | None = None

    def reader_workspace(self) -> str:
        """The caller's workspace for reading; raises Auth/Forbidden errors."""
        if self.principal is None:
            raise AuthError("authentication required")
        return self.principal.require_reader()


Info = StrawberryInfo[Context, None]
