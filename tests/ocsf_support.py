"""Validation of OCSF events against the official schema, offline.

ocsf-json-schema ships schema.ocsf.io's schema exports (`/export/schema`) of OCSF
1.0 to 1.8 inside the package and builds each class's JSON Schema (draft
2020-12) from them locally; `jsonschema` validates. Nothing is downloaded.
Each event is validated with the profiles it names in `metadata.profiles`, as
a consumer validates it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from auditlog.ocsf import OCSF_VERSION

# The newest version the package ships: the events are checked against it too, so
# that a consumer on a later 1.x accepts them as well.
NEWEST_VERSION = "1.8.0"


@cache
def raw_schema(version: str = OCSF_VERSION) -> dict[str, Any]:
    """The official schema export of one version (classes, objects, enums, captions)."""
    schema: dict[str, Any] = get_ocsf_schema(version=version)
    return schema


@cache
def _schemas(version: str) -> OcsfJsonSchemaEmbedded:
    return OcsfJsonSchemaEmbedded(raw_schema(version))


@cache
def _validator(version: str, class_uid: int, profiles: tuple[str, ...]) -> Draft202012Validator:
    name = _schemas(version).lookup_class_name_from_uid(class_uid=class_uid)
    return Draft202012Validator(class_schema(version, name, profiles))


def class_schema(version: str, name: str, profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = _schemas(version).get_class_schema(
        class_name=name, profiles=list(profiles)
    )
    return schema


def ocsf_errors(event: dict[str, Any], version: str = OCSF_VERSION) -> list[str]:
    """What the official JSON Schema of the event's class refuses in it (empty: valid)."""
    profiles = tuple(event.get("metadata", {}).get("profiles", ()))
    validator = _validator(version, event["class_uid"], profiles)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(event)
    ]


def assert_valid_ocsf(event: dict[str, Any], *versions: str) -> None:
    for version in versions or (OCSF_VERSION,):
        errors = ocsf_errors(event, version)
        assert not errors, (version, event.get("metadata", {}).get("event_code"), errors)
