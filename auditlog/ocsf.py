"""The OCSF form of stored events (Open Cybersecurity Schema Framework, OCSF_VERSION).

MAPPING is the one table of the mapping: each catalog action's OCSF class and
activity (docs/ocsf.md shows the same table; a test keeps the two equal).
`to_ocsf` turns a stored payload (the NATIVE form, as ingest writes it) into an
OCSF event of that class; every native field either has its OCSF place or is
kept under `unmapped` with its native name, so nothing is lost. The stored
payload never changes: the integrity layer hashes it, not this form.

It runs for every event of an OCSF destination or export, so each action's
constant part (class, activity, names, type_uid) is built once, here, and an
event costs a handful of small dicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from importlib import metadata as package_metadata
from typing import Any

import orjson

from auditlog.catalog import CATALOG

OCSF_VERSION = "1.3.0"


def _product_version() -> str | None:
    try:
        return package_metadata.version("auditlog")
    except package_metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return None


PRODUCT: dict[str, str] = {"name": "AIBAMS Audit Log", "vendor_name": "AIBAMS", "uid": "auditlog"}
if (_version := _product_version()) is not None:
    PRODUCT["version"] = _version
# The service users sign in to, named in Authentication events (which require one).
SIGN_IN_SERVICE = {"name": "AIBAMS"}


class Subject(Enum):
    """Where a class puts the event's targets (each class has its own attributes for them)."""

    ACTOR = "user = the actor"  # Authentication: the user who signs in or out
    USER = "user = the first user target, else the actor"
    PRIVILEGES = "user = the first user target, else the actor; privileges = the new role"
    ENTITY = "entity = the first target, else the workspace"
    WEB_RESOURCES = "web_resources = the targets, else the workspace"
    RESOURCES = "resources = the targets; api.operation = the action"


@dataclass(frozen=True)
class OcsfClass:
    uid: int
    name: str
    category_uid: int
    category_name: str
    subject: Subject
    activities: dict[int, str]  # the activities this mapping uses, with OCSF's captions
    # Profiles whose attributes the class's events use, named in metadata.profiles:
    # these classes have `actor` from the host profile only.
    profiles: tuple[str, ...] = ()


_IAM = (3, "Identity & Access Management")
_APP = (6, "Application Activity")
AUTHENTICATION = OcsfClass(3002, "Authentication", *_IAM, Subject.ACTOR, {1: "Logon", 2: "Logoff"})
ACCOUNT_CHANGE = OcsfClass(
    3001,
    "Account Change",
    *_IAM,
    Subject.USER,
    {
        1: "Create",
        3: "Password Change",
        4: "Password Reset",
        5: "Disable",
        6: "Delete",
        10: "MFA Factor Enable",
        11: "MFA Factor Disable",
    },
)
ENTITY_MANAGEMENT = OcsfClass(
    3004,
    "Entity Management",
    *_IAM,
    Subject.ENTITY,
    {1: "Create", 3: "Update", 4: "Delete", 9: "Disable", 99: "Other"},
    ("host",),
)
USER_ACCESS = OcsfClass(
    3005, "User Access Management", *_IAM, Subject.PRIVILEGES, {1: "Assign Privileges"}, ("host",)
)
WEB_RESOURCES = OcsfClass(
    6001,
    "Web Resources Activity",
    *_APP,
    Subject.WEB_RESOURCES,
    {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 7: "Export", 8: "Share"},
    ("host",),
)
API_ACTIVITY = OcsfClass(6003, "API Activity", *_APP, Subject.RESOURCES, {99: "Other"})


@dataclass(frozen=True)
class Mapping:
    action: str
    cls: OcsfClass
    activity_id: int
    failure: bool = False  # status_id 2 (Failure) instead of 1 (Success)
    # activity_id 99 (Other) names its own activity, as OCSF asks.
    other_name: str | None = None

    @property
    def activity_name(self) -> str:
        return self.other_name or self.cls.activities[self.activity_id]

    @property
    def type_uid(self) -> int:
        return self.cls.uid * 100 + self.activity_id


_AUTH, _ACCT, _ENT, _UAM, _WEB, _API = (
    AUTHENTICATION,
    ACCOUNT_CHANGE,
    ENTITY_MANAGEMENT,
    USER_ACCESS,
    WEB_RESOURCES,
    API_ACTIVITY,
)

# The mapping: every catalog action, in catalog order (a test checks both).
MAPPING: tuple[Mapping, ...] = (
    Mapping("user.login.success", _AUTH, 1),
    Mapping("user.login.failed", _AUTH, 1, failure=True),
    Mapping("user.password.changed", _ACCT, 3),
    Mapping("user.password.reset", _ACCT, 4),
    Mapping("user.2fa.enabled", _ACCT, 10),
    Mapping("user.2fa.disabled", _ACCT, 11),
    Mapping("user.session.signed_out", _AUTH, 2),
    Mapping("user.session.signed_out_all", _AUTH, 2),
    Mapping("workspace.user.invited", _ACCT, 1),
    Mapping("workspace.user.suspended", _ACCT, 5),
    Mapping("workspace.user.removed", _ACCT, 6),
    Mapping("workspace.user.role_changed", _UAM, 1),
    Mapping("workspace.billing.plan_changed", _ENT, 3),
    Mapping("workspace.billing.payment_method_updated", _ENT, 3),
    Mapping("workspace.domain.added", _ENT, 1),
    Mapping("workspace.domain.verified", _ENT, 3),
    Mapping("workspace.security_policy.changed", _ENT, 3),
    Mapping("audit_log.export.created", _WEB, 7),
    Mapping("audit_log.stream.created", _ENT, 1),
    Mapping("audit_log.stream.updated", _ENT, 3),
    Mapping("audit_log.stream.deleted", _ENT, 4),
    Mapping("audit_log.api_key.created", _ENT, 1),
    Mapping("audit_log.api_key.revoked", _ENT, 9),
    Mapping("audit_log.stream.replayed", _ENT, 99, other_name="Replay"),
    Mapping("audit_log.stream.dead_lettered", _ENT, 3),
    Mapping("audit_log.stream.dead_letters_retried", _ENT, 3),
    Mapping("audit_log.retention.purged", _ENT, 4),
    Mapping("audit_log.retention.hold_placed", _ENT, 1),
    Mapping("audit_log.retention.hold_released", _ENT, 4),
    Mapping("file.uploaded", _WEB, 1),
    Mapping("file.deleted", _WEB, 4),
    Mapping("folder.created", _WEB, 1),
    Mapping("folder.deleted", _WEB, 4),
    Mapping("file.share.created", _WEB, 8),
    Mapping("file.share.updated", _WEB, 8),
    Mapping("file.permission.changed", _WEB, 3),
    Mapping("file.bulk_download", _WEB, 2),
    Mapping("mailbox.created", _ENT, 1),
    Mapping("mailbox.deleted", _ENT, 4),
    Mapping("shared_inbox.member.added", _ENT, 3),
    Mapping("shared_inbox.member.removed", _ENT, 3),
    Mapping("mail.forwarding_rule.created", _ENT, 1),
    Mapping("ai.workflow.created", _ENT, 1),
    Mapping("ai.workflow.deleted", _ENT, 4),
    Mapping("ai.memory.settings_changed", _ENT, 3),
    Mapping("ai.api_key.created", _ENT, 1),
    Mapping("ai.api_key.used", _API, 99, other_name="Use"),
)

MAPPING_OF: dict[str, Mapping] = {m.action: m for m in MAPPING}


def fallback_mapping(action: str) -> Mapping:
    """An action outside the catalog (only the destination test event is sent so)."""
    return Mapping(action, ENTITY_MANAGEMENT, 99, other_name="Other")


_DESCRIPTION = {entry.action: entry.description for entry in CATALOG}
_DESCRIPTION["audit_log.stream.test"] = "A test event sent to a log streaming destination."
_STATUS = {False: (1, "Success"), True: (2, "Failure")}


def _head(m: Mapping) -> dict[str, Any]:
    """The attributes every event of an action shares."""
    status_id, status = _STATUS[m.failure]
    head: dict[str, Any] = {
        "class_uid": m.cls.uid,
        "class_name": m.cls.name,
        "category_uid": m.cls.category_uid,
        "category_name": m.cls.category_name,
        "activity_id": m.activity_id,
        "activity_name": m.activity_name,
        "type_uid": m.type_uid,
        "type_name": f"{m.cls.name}: {m.activity_name}",
        "severity_id": 1,
        "severity": "Informational",
        "status_id": status_id,
        "status": status,
    }
    if m.action in _DESCRIPTION:
        head["message"] = _DESCRIPTION[m.action]
    return head


def _meta(cls: OcsfClass) -> dict[str, Any]:
    meta: dict[str, Any] = {"version": OCSF_VERSION, "product": PRODUCT}
    if cls.profiles:
        meta["profiles"] = list(cls.profiles)
    return meta


_Known = tuple[dict[str, Any], dict[str, Any], Subject]
_HEADS: dict[str, _Known] = {m.action: (_head(m), _meta(m.cls), m.cls.subject) for m in MAPPING}
_USER_TYPES = {"USER": (1, "User"), "SYSTEM": (3, "System"), "API_KEY": (99, "API Key")}
# OCSF's email_t (what `email_addr` accepts); another address is kept under unmapped.
_EMAIL = re.compile(r"[a-zA-Z0-9!#$%&'*+-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_ROLE_KEYS = ("to", "role", "newRole")


# The members as module globals: an Enum attribute lookup costs about 0.3 us on
# Python 3.11, and to_ocsf makes several for every event.
_ACTOR_SUBJECT, _USER_SUBJECT, _PRIVILEGES_SUBJECT = Subject.ACTOR, Subject.USER, Subject.PRIVILEGES
_ENTITY_SUBJECT, _WEB_SUBJECT = Subject.ENTITY, Subject.WEB_RESOURCES


def epoch_ms(timestamp: str) -> int:
    """A stored RFC 3339 timestamp as OCSF's timestamp_t: milliseconds since the epoch,
    exact (integer arithmetic, never a float's rounding)."""
    return (datetime.fromisoformat(timestamp) - _EPOCH) // _MS


def _actor_user(actor: dict[str, Any], unmapped: dict[str, Any]) -> dict[str, Any]:
    user: dict[str, Any] = {}
    uid, name, email = actor.get("id"), actor.get("name"), actor.get("email")
    if uid is not None:
        user["uid"] = uid
    if name is not None:
        user["name"] = name
    if email is not None:
        if _EMAIL.fullmatch(email):
            user["email_addr"] = email
        else:
            unmapped["actor"] = {"email": email}
    type_id, type_name = _USER_TYPES.get(actor.get("type") or "", (0, "Unknown"))
    if uid is None and name is None:  # OCSF's user needs a uid or a name
        user["name"] = email if email is not None else type_name
    user["type_id"] = type_id
    user["type"] = type_name
    return user


def _resource(target: dict[str, Any]) -> dict[str, Any] | None:
    """A target as OCSF's resource_details, web_resource or managed_entity (they share
    uid, name and type); None for one with neither uid nor name, which OCSF refuses."""
    uid, name = target.get("id"), target.get("name")
    if uid is None and name is None:
        return None
    out: dict[str, Any] = {"type": target["type"]}
    if uid is not None:
        out["uid"] = uid
    if name is not None:
        out["name"] = name
    return out


def _target_user(targets: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, int]:
    """The first target of type user (as OCSF's user) and its index."""
    for index, target in enumerate(targets):
        if str(target.get("type", "")).lower() == "user":
            uid, name = target.get("id"), target.get("name")
            if uid is None and name is None:
                continue
            user: dict[str, Any] = {}
            if uid is not None:
                user["uid"] = uid
            if name is not None:
                user["name"] = name
            return user, index
    return None, -1


def _role(metadata: dict[str, Any]) -> str:
    for key in _ROLE_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
    return "unknown"


def _src_endpoint(payload: dict[str, Any], unmapped: dict[str, Any]) -> dict[str, Any] | None:
    ip = payload.get("ipAddress")
    native = payload.get("location")
    if ip is None:
        if native:
            unmapped["location"] = native
        return None
    endpoint: dict[str, Any] = {"ip": ip}
    if native:
        location: dict[str, Any] = {}
        for source, name in (("city", "city"), ("region", "region"), ("countryCode", "country")):
            value = native.get(source)
            if value is not None:
                location[name] = value
        if location:  # OCSF's location needs a city, region or country
            for source, name in (("latitude", "lat"), ("longitude", "long")):
                value = native.get(source)
                if value is not None:
                    location[name] = value
            endpoint["location"] = location
            if native.get("country") is not None:
                unmapped["location"] = {"country": native["country"]}
        else:
            unmapped["location"] = native
    return endpoint


def to_ocsf(payload: dict[str, Any]) -> dict[str, Any]:
    """The OCSF event of one stored payload (docs/ocsf.md)."""
    action: str = payload["action"]
    known = _HEADS.get(action)
    if known is None:
        mapping = fallback_mapping(action)
        known = (_head(mapping), _meta(mapping.cls), mapping.cls.subject)
    head, meta_head, subject = known
    out = dict(head)
    workspace_id: str = payload["workspaceId"]
    out["time"] = epoch_ms(payload["occurredAt"])
    meta = dict(meta_head)
    meta["uid"] = payload["id"]
    meta["tenant_uid"] = workspace_id
    meta["event_code"] = action
    received = payload.get("receivedAt")
    if received is not None:
        meta["logged_time"] = epoch_ms(received)
    out["metadata"] = meta

    unmapped: dict[str, Any] = {"category": payload["category"]}
    actor = _actor_user(payload.get("actor") or {}, unmapped)
    out["actor"] = {"user": actor}
    endpoint = _src_endpoint(payload, unmapped)
    if endpoint is not None:
        out["src_endpoint"] = endpoint
    user_agent = payload.get("userAgent")
    if user_agent is not None:
        out["http_request"] = {"user_agent": user_agent}
    metadata: dict[str, Any] = payload.get("metadata") or {}

    targets: list[dict[str, Any]] = payload.get("targets") or []
    rest: list[dict[str, Any]] = []
    if subject is _ACTOR_SUBJECT:
        out["user"] = actor
        out["service"] = SIGN_IN_SERVICE
        rest = targets
        if head["status_id"] == 2 and isinstance(metadata.get("reason"), str):
            out["status_detail"] = metadata["reason"]
    elif subject is _USER_SUBJECT or subject is _PRIVILEGES_SUBJECT:
        user, index = _target_user(targets)
        out["user"] = user if user is not None else actor
        rest = [t for i, t in enumerate(targets) if i != index] if index >= 0 else targets
        if subject is _PRIVILEGES_SUBJECT:
            out["privileges"] = [_role(metadata)]
            out["resource"] = {"type": "workspace", "uid": workspace_id}
    else:
        placed: list[dict[str, Any]] = []
        for target in targets:
            resource = _resource(target)
            if resource is None:
                rest.append(target)
            elif subject is _ENTITY_SUBJECT and placed:
                rest.append(target)  # Entity Management holds one entity
            else:
                placed.append(resource)
        if subject is _ENTITY_SUBJECT:
            out["entity"] = placed[0] if placed else {"type": "workspace", "uid": workspace_id}
        elif subject is _WEB_SUBJECT:
            out["web_resources"] = placed or [{"type": "workspace", "uid": workspace_id}]
        else:
            if placed:
                out["resources"] = placed
            out["api"] = {"operation": action}
            if endpoint is None:  # API Activity requires a source endpoint
                out["src_endpoint"] = {"name": "unknown"}

    if rest:
        unmapped["targets"] = rest
    device = payload.get("device")
    if device:
        unmapped["device"] = device
    if metadata:
        unmapped["metadata"] = metadata
    anomalies = payload.get("anomalies")
    if anomalies:
        unmapped["anomalies"] = anomalies
    out["unmapped"] = unmapped
    return out


def ocsf_json(payload_text: str) -> bytes:
    """The OCSF event of a stored payload's JSON text, as JSON."""
    return orjson.dumps(to_ocsf(orjson.loads(payload_text)))
