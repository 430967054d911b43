"""Who may resolve a field: Strawberry permission classes over the principal checks of
`auditlog.model.Principal`, the same checks the ingest endpoint and a websocket's
`connection_init` make (docs/architecture.md, "Authorization").

A refused field raises the domain error itself (AuthError, ForbiddenError), so its
message says why and `extensions.code` is UNAUTHENTICATED or FORBIDDEN, as every
other refusal. `guard(...)` attaches them without schema directives, so the SDL
stays what clients see.
"""

from __future__ import annotations

from typing import Any

from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension

from auditlog.errors import AuthError, ForbiddenError
from auditlog.model import Plan, Principal
from auditlog.schema.context import Info
from auditlog.services import workspaces as workspace_service


def principal_of(info: Info) -> Principal:
    principal = info.context.principal
    if principal is None:
        raise AuthError("authentication required")
    return principal


class IsReader(BasePermission):
    """Owner or admin of the token's workspace: who may read the log and its proofs."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal_of(info).require_reader()
        return True


class IsWorkspaceAdmin(BasePermission):
    """Owner or admin of the token's workspace, changing what the workspace sends out."""

    def __init__(self, what: str) -> None:
        self.what = what  # completes "the member role cannot ..."

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal_of(info).require_admin(self.what)
        return True


class NeedsPlan(BasePermission):
    """The token's workspace is on `plan`; read from the database on every field, so a
    downgrade takes effect at once."""

    def __init__(self, plan: Plan, feature: str) -> None:
        self.plan = plan
        self.feature = feature  # "log streaming needs the ENTERPRISE plan"

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        workspace_id = principal_of(info).workspace_id
        if workspace_id is None:
            raise ForbiddenError(f"{self.feature} belongs to a workspace; this key has none")
        await workspace_service.require_plan(
            info.context.services.pool, workspace_id, self.plan, self.feature
        )
        return True


def guard(*permissions: BasePermission) -> list[FieldExtension]:
    """A field's `extensions=`: checked in order, before its resolver runs (a fresh
    extension per field, as Strawberry binds each to its field)."""
    return [PermissionExtension(list(permissions), use_directives=False)]


def reader() -> list[FieldExtension]:
    return guard(IsReader())


def streaming_admin() -> list[FieldExtension]:
    return guard(
        IsWorkspaceAdmin("manage streaming destinations (owner or admin only)"),
        NeedsPlan(Plan.ENTERPRISE, "log streaming"),
    )
