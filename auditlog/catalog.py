"""The event catalog: every action the log accepts, with its category, in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Re-exported: Category is defined once, in model; the catalog is where most code looks.
from auditlog.model import Category as Category


@dataclass(frozen=True)
class CatalogEntry:
    action: str
    category: Category
    description: str


_A, _W, _D, _C, _I = (
    Category.AUTHENTICATION,
    Category.WORKSPACE,
    Category.DATA,
    Category.COMMUNICATION,
    Category.AI,
)

CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry("user.login.success", _A, "A user signed in."),
    CatalogEntry("user.login.failed", _A, "A sign-in attempt failed."),
    CatalogEntry("user.password.changed", _A, "A user changed their password."),
    CatalogEntry("user.password.reset", _A, "A user's password was reset."),
    CatalogEntry("user.2fa.enabled", _A, "Two-factor authentication was turned on."),
    CatalogEntry("user.2fa.disabled", _A, "Two-factor authentication was turned off."),
    CatalogEntry("user.session.signed_out", _A, "A user signed out of one session."),
    CatalogEntry("user.session.signed_out_all", _A, "A user signed out of every session."),
    CatalogEntry("workspace.user.invited", _W, "A user was invited to the workspace."),
    CatalogEntry("workspace.user.suspended", _W, "A user was suspended."),
    CatalogEntry("workspace.user.removed", _W, "A user was removed from the workspace."),
    CatalogEntry("workspace.user.role_changed", _W, "A user's role changed."),
    CatalogEntry("workspace.billing.plan_changed", _W, "The workspace's plan changed."),
    CatalogEntry("workspace.billing.payment_method_updated", _W, "The payment method was updated."),
    CatalogEntry("workspace.domain.added", _W, "A domain was added to the workspace."),
    CatalogEntry("workspace.domain.verified", _W, "A domain was verified."),
    CatalogEntry("workspace.security_policy.changed", _W, "A security policy changed."),
    CatalogEntry("audit_log.export.created", _W, "An audit log export was created."),
    CatalogEntry("audit_log.stream.created", _W, "A log streaming destination was created."),
    CatalogEntry("audit_log.stream.updated", _W, "A log streaming destination was changed."),
    CatalogEntry("audit_log.stream.deleted", _W, "A log streaming destination was deleted."),
    CatalogEntry("audit_log.api_key.created", _W, "An audit log API key was created."),
    CatalogEntry("audit_log.api_key.revoked", _W, "An audit log API key was revoked."),
    CatalogEntry("audit_log.stream.replayed", _W, "A log streaming destination was replayed."),
    CatalogEntry(
        "audit_log.stream.dead_lettered",
        _W,
        "A log streaming destination refused an event for good; it was set aside.",
    ),
    CatalogEntry(
        "audit_log.stream.dead_letters_retried",
        _W,
        "The events a log streaming destination refused were queued to be sent again.",
    ),
    CatalogEntry("audit_log.retention.purged", _W, "Events past the retention period were purged."),
    CatalogEntry("audit_log.retention.hold_placed", _W, "A legal hold was placed on events."),
    CatalogEntry("audit_log.retention.hold_released", _W, "A legal hold was released."),
    CatalogEntry("file.uploaded", _D, "A file was uploaded."),
    CatalogEntry("file.deleted", _D, "A file was deleted."),
    CatalogEntry("folder.created", _D, "A folder was created."),
    CatalogEntry("folder.deleted", _D, "A folder was deleted."),
    CatalogEntry("file.share.created", _D, "A file was shared."),
    CatalogEntry("file.share.updated", _D, "A file share was changed."),
    CatalogEntry("file.permission.changed", _D, "A file's permissions changed."),
    CatalogEntry("file.bulk_download", _D, "Many files were downloaded at once."),
    CatalogEntry("mailbox.created", _C, "A mailbox was created."),
    CatalogEntry("mailbox.deleted", _C, "A mailbox was deleted."),
    CatalogEntry("shared_inbox.member.added", _C, "A member was added to a shared inbox."),
    CatalogEntry("shared_inbox.member.removed", _C, "A member was removed from a shared inbox."),
    CatalogEntry("mail.forwarding_rule.created", _C, "A mail forwarding rule was created."),
    CatalogEntry("ai.workflow.created", _I, "An AI workflow was created."),
    CatalogEntry("ai.workflow.deleted", _I, "An AI workflow was deleted."),
    CatalogEntry("ai.memory.settings_changed", _I, "AI memory settings changed."),
    CatalogEntry("ai.api_key.created", _I, "An AI API key was created."),
    CatalogEntry("ai.api_key.used", _I, "An AI API key was used."),
)

CATEGORY_OF: dict[str, Category] = {entry.action: entry.category for entry in CATALOG}

LOGIN_ACTIONS = frozenset({"user.login.success", "user.login.failed"})

# Metadata keys that would carry message content: MailX events never store it.
MAIL_CONTENT_KEYS = frozenset({"body", "content", "html", "text", "subject", "attachments"})

_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?$")


def expand_action_pattern(pattern: str) -> list[str]:
    """Catalog actions matching `pattern`: an exact action or a prefix ending in ".*".

    Raises ValueError for a malformed pattern or one that matches nothing, since a
    filter that can never match is a mistake the caller wants to hear about.
    """
    if not _PATTERN.match(pattern):
        raise ValueError(f"malformed action pattern {pattern!r}")
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        matches = [e.action for e in CATALOG if e.action.startswith(prefix)]
    else:
        matches = [pattern] if pattern in CATEGORY_OF else []
    if not matches:
        raise ValueError(f"{pattern!r} matches no action in the event catalog")
    return matches
