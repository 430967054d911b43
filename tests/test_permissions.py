"""Authorization in one place: every root field that touches a workspace carries its
permission classes (schema/permissions.py), and the ingest endpoint and websocket
connection_init make the same principal checks, with the same words."""

from __future__ import annotations

import pytest
from strawberry.permission import PermissionExtension

from auditlog.errors import ForbiddenError
from auditlog.model import Principal, Role
from auditlog.resolvers.root import schema

PUBLIC = {("Query", "event_catalog")}  # the catalog of action names is the same for all


def _permissions(type_name: str) -> dict[str, list[str]]:
    definition = schema.schema_converter.type_map[type_name].definition
    return {
        field.python_name: [
            type(p).__name__
            for extension in field.extensions
            if isinstance(extension, PermissionExtension)
            for p in extension.permissions
        ]
        for field in definition.fields  # type: ignore[attr-defined]
    }


@pytest.mark.parametrize("type_name", ["Query", "Mutation", "Subscription"])
def test_every_root_field_but_the_catalog_is_guarded(type_name: str) -> None:
    for name, found in _permissions(type_name).items():
        if (type_name, name) in PUBLIC:
            assert found == [], name
            continue
        assert found, f"{type_name}.{name} has no permission class"
        if "streaming" in name or name == "retry_dead_letters":
            assert found == ["IsWorkspaceAdmin", "NeedsPlan"], name
        else:
            assert found == ["IsReader"], name


def test_the_principal_checks_say_who_cannot_do_what() -> None:
    member = Principal("ws", Role.MEMBER, key_id="k")
    ingest = Principal("ws", Role.INGEST, key_id="k")
    admin = Principal("ws", Role.ADMIN, key_id="k")
    with pytest.raises(ForbiddenError, match=r"^the member role cannot read the audit log$"):
        member.require_reader()
    with pytest.raises(ForbiddenError, match=r"^the ingest role cannot read the audit log$"):
        ingest.require_reader()
    with pytest.raises(ForbiddenError, match=r"^the member role cannot manage destinations$"):
        member.require_admin("manage destinations")
    with pytest.raises(ForbiddenError, match=r"^the admin role cannot ingest events$"):
        admin.require_ingest()
    assert admin.require_reader() == admin.require_admin("x") == "ws"
    ingest.require_ingest()
    platform = Principal(None, Role.INGEST, key_id="k")
    with pytest.raises(ForbiddenError):
        platform.require_reader()
