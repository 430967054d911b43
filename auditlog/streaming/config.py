"""Destination configurations: one dataclass per kind, validated, split into what
may be shown (stored as JSON) and the credentials (stored encrypted).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from auditlog.errors import BadInputError
from auditlog.streaming.netguard import NetworkPolicy

MASK = "********"
MAX_TEXT = 256
MAX_TAGS = 50

# Datadog's sites (https://docs.datadoghq.com/getting_started/site/).
DATADOG_SITES = frozenset(
    {
        "datadoghq.com",
        "us3.datadoghq.com",
        "us5.datadoghq.com",
        "datadoghq.eu",
        "ap1.datadoghq.com",
        "ap2.datadoghq.com",
        "ddog-gov.com",
    }
)
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SPLUNK_NAME = re.compile(r"^[A-Za-z0-9_:.\-]{1,128}$")
_TAG = re.compile(r"^[^,\s][^,]{0,199}$")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class _Config:
    KIND: ClassVar[str]
    SECRETS: ClassVar[tuple[str, ...]]

    def public(self) -> dict[str, Any]:
        """What may be stored in clear and shown (camelCase, as the API names it)."""
        return {_camel(k): v for k, v in vars(self).items() if k not in self.SECRETS}

    def credentials(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k in self.SECRETS}

    @classmethod
    def restore(cls, public: dict[str, Any], credentials: dict[str, Any]) -> Any:
        values = {f.name: public.get(_camel(f.name)) for f in fields(cls)}  # type: ignore[arg-type]
        values.update(credentials)
        return cls(**values)

    @classmethod
    def masked(cls, public: dict[str, Any]) -> dict[str, Any]:
        return {**public, **{_camel(k): MASK for k in cls.SECRETS}}


@dataclass(frozen=True)
class WebhookConfig(_Config):
    KIND = "WEBHOOK"
    SECRETS = ("secret",)
    url: str
    secret: str | None = None


@dataclass(frozen=True)
class SplunkHecConfig(_Config):
    KIND = "SPLUNK_HEC"
    SECRETS = ("token",)
    url: str
    token: str
    index: str | None = None
    sourcetype: str | None = None
    # Wait for indexer acknowledgement before a batch counts as delivered; None in
    # configurations stored before the option existed, which means off.
    use_ack: bool | None = None


@dataclass(frozen=True)
class DatadogConfig(_Config):
    KIND = "DATADOG"
    SECRETS = ("api_key",)
    site: str
    api_key: str
    service: str | None = None
    tags: list[str] | None = None
    endpoint_url: str | None = None


@dataclass(frozen=True)
class S3Config(_Config):
    KIND = "S3"
    SECRETS = ("secret_access_key",)
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str
    prefix: str | None = None
    endpoint_url: str | None = None


DestinationConfig = WebhookConfig | SplunkHecConfig | DatadogConfig | S3Config
CONFIG_CLASSES: dict[str, type[_Config]] = {
    c.KIND: c for c in (WebhookConfig, SplunkHecConfig, DatadogConfig, S3Config)
}


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _text(value: str | None, argument: str, *, required: bool = False) -> str | None:
    if value is None or not value.strip():
        if required:
            raise BadInputError(argument, "is required")
        return None
    if len(value) > MAX_TEXT:
        raise BadInputError(argument, f"at most {MAX_TEXT} characters")
    return value.strip()


def _webhook_secret(value: str | None, argument: str) -> str:
    if value is None:
        return new_webhook_secret()
    raw = value.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadInputError(argument, "must be whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise BadInputError(argument, "must hold 24 to 64 bytes of key material")
    return "whsec_" + raw


async def validate_config(
    config: DestinationConfig, policy: NetworkPolicy, argument: str
) -> DestinationConfig:
    """Check every field (naming it as `argument.field`) and normalise; fill the
    webhook secret when absent."""
    if isinstance(config, WebhookConfig):
        arg = f"{argument}.webhook"
        await policy.check_url_resolves_public(config.url, f"{arg}.url")
        return replace(
            config, url=config.url.strip(), secret=_webhook_secret(config.secret, f"{arg}.secret")
        )
    if isinstance(config, SplunkHecConfig):
        arg = f"{argument}.splunkHec"
        await policy.check_url_resolves_public(config.url, f"{arg}.url")
        for name in ("index", "sourcetype"):
            value = _text(getattr(config, name), f"{arg}.{name}")
            if value is not None and not _SPLUNK_NAME.match(value):
                raise BadInputError(f"{arg}.{name}", "letters, digits, '_', ':', '.', '-' only")
        url = config.url.strip().rstrip("/")
        for suffix in ("/services/collector/event", "/services/collector"):
            url = url.removesuffix(suffix)  # the HEC base is wanted; tolerate the full path
        return replace(
            config,
            url=url,
            token=_text(config.token, f"{arg}.token", required=True) or "",
            index=_text(config.index, f"{arg}.index"),
            sourcetype=_text(config.sourcetype, f"{arg}.sourcetype"),
            use_ack=bool(config.use_ack),
        )
    if isinstance(config, DatadogConfig):
        arg = f"{argument}.datadog"
        site = config.site.strip().lower()
        if site not in DATADOG_SITES:
            raise BadInputError(f"{arg}.site", f"must be one of {', '.join(sorted(DATADOG_SITES))}")
        if config.endpoint_url is not None:
            await policy.check_url_resolves_public(config.endpoint_url, f"{arg}.endpointUrl")
        tags = config.tags or []
        if len(tags) > MAX_TAGS or not all(_TAG.match(t) for t in tags):
            raise BadInputError(
                f"{arg}.tags", f"at most {MAX_TAGS} tags, each without commas, 200 characters"
            )
        return replace(
            config,
            site=site,
            api_key=_text(config.api_key, f"{arg}.apiKey", required=True) or "",
            service=_text(config.service, f"{arg}.service"),
            tags=tags or None,
            endpoint_url=config.endpoint_url.strip() if config.endpoint_url else None,
        )
    arg = f"{argument}.s3"
    bucket = config.bucket.strip()
    if not _S3_BUCKET.match(bucket) or ".." in bucket:
        raise BadInputError(f"{arg}.bucket", "is not a valid S3 bucket name")
    if not _AWS_REGION.match(config.region.strip()):
        raise BadInputError(f"{arg}.region", "is not an AWS region such as eu-west-1")
    if config.endpoint_url is not None:
        await policy.check_url_resolves_public(config.endpoint_url, f"{arg}.endpointUrl")
    prefix = (_text(config.prefix, f"{arg}.prefix") or "").strip("/")
    return replace(
        config,
        bucket=bucket,
        region=config.region.strip(),
        prefix=prefix or None,
        access_key_id=_text(config.access_key_id, f"{arg}.accessKeyId", required=True) or "",
        secret_access_key=_text(config.secret_access_key, f"{arg}.secretAccessKey", required=True)
        or "",
        endpoint_url=config.endpoint_url.strip() if config.endpoint_url else None,
    )


def restore_config(kind: str, public: dict[str, Any], credentials: dict[str, Any]) -> Any:
    """The full configuration of a stored destination (credentials decrypted)."""
    return CONFIG_CLASSES[kind].restore(public, credentials)
