"""Configuration: one frozen Settings object, read once from the environment.

A `.env` file in the working directory is read too (values already in the
environment win). Bad values fail at start-up, never in the middle of a request.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import platformdirs
from dotenv import dotenv_values

from auditlog.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_RETENTION_GRACE_DAYS = 7


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _positive_float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: must be a number of seconds") from None
    if not 0 < value <= 3600:
        raise ConfigError(f"{name}: must be between 0 and 3600 seconds")
    return value


def _seconds(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= 7 * 24 * 3600:
        raise ConfigError(f"{name}: must be a whole number of seconds between 1 and 604800")
    return int(raw)


def _count(env: dict[str, str], name: str, default: int, *, most: int) -> int:
    raw = (env.get(name) or str(default)).strip()
    if not raw.isdigit() or int(raw) > most:
        raise ConfigError(f"{name}: must be a whole number between 0 and {most}")
    return int(raw)


def _at_least_one(env: dict[str, str], name: str, default: int, *, most: int) -> int:
    raw = (env.get(name) or str(default)).strip()
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ConfigError(f"{name}: must be a whole number between 1 and {most}")
    return int(raw)


# A full ingest batch (ingest.validate.MAX_EVENTS): a smaller burst could never
# accept one.
_LARGEST_BATCH = 1000


def _ingest_rate(env: dict[str, str]) -> tuple[int, int]:
    rate = _count(env, "AUDITLOG_INGEST_EVENTS_PER_SECOND", 5000, most=10_000_000)
    burst = _count(env, "AUDITLOG_INGEST_BURST_EVENTS", max(2 * rate, _LARGEST_BATCH), most=10**8)
    if rate and burst < _LARGEST_BATCH:
        raise ConfigError(
            f"AUDITLOG_INGEST_BURST_EVENTS: at least {_LARGEST_BATCH} (one full batch)"
        )
    return rate, burst


def _public_url(raw: str | None) -> str | None:
    """An absolute http(s) URL without query or fragment, without a trailing slash."""
    if raw is None:
        return None
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("AUDITLOG_PUBLIC_URL: must be an absolute http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ConfigError("AUDITLOG_PUBLIC_URL: must not carry a query or a fragment")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _read_urls(raw: str | None) -> tuple[str, ...]:
    """DATABASE_READ_URL: one or more postgresql:// URLs of hot standbys, comma separated."""
    urls = tuple(u.strip() for u in (raw or "").split(",") if u.strip())
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.netloc:
            raise ConfigError("DATABASE_READ_URL: one or more postgresql:// URLs, comma separated")
    return urls


def _metrics_token(raw: str | None) -> str | None:
    # A short token could be guessed by anyone who can reach the port.
    if raw is not None and (len(raw) < 16 or any(c.isspace() for c in raw)):
        raise ConfigError("AUDITLOG_METRICS_TOKEN: at least 16 characters, no white space")
    return raw


def _log_name(raw: str) -> str:
    # The log name is also the signing key's name in signed notes: no spaces, no '+'.
    if any(c.isspace() for c in raw) or "+" in raw or len(raw) > 200:
        raise ConfigError("AUDITLOG_LOG_NAME: at most 200 characters, no white space and no '+'")
    return raw


def _default_data_dir() -> Path:
    # As root the embedded PostgreSQL runs as its own system user, which must be
    # able to reach the data folder: /var/lib suits a root service, and avoids
    # opening up root's home directory.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/auditlog")
    return Path(platformdirs.user_data_dir("auditlog", appauthor=False))


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    # Hot standbys of DATABASE_URL for reads that may lag (docs/scaling.md); none: the primary.
    database_read_urls: tuple[str, ...] = ()
    redis_url: str | None = None
    data_dir: Path = field(default_factory=_default_data_dir)
    geoip_db: Path | None = None
    # Without geoip_db: the country from DB-IP's packaged database (AUDITLOG_GEOIP_DB=none: off).
    geoip_default: bool = True
    # Encrypts destination credentials and signs download links and cursors.
    secret_key: str = ""
    jwt_secret: str | None = None
    jwks_url: str | None = None
    # When set, console session tokens must carry this `iss` / this `aud` (among theirs).
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    allow_private_destinations: bool = False
    # How long a signed export download link stays valid.
    export_link_ttl_seconds: int = 3600
    # The service's address as clients reach it (behind a proxy, with any path
    # prefix): download links start with it. Unset: the request's own address.
    public_url: str | None = None
    # Exports a workspace may create in any 60 seconds (0: no limit). Planning an
    # export numbers every matching row once, so this bounds the load one
    # workspace's scripts can put on the database.
    exports_per_minute: int = 10
    # Export downloads of one workspace at once in a process (at most one fewer than
    # the process's download slots, so one workspace never takes them all).
    downloads_per_workspace: int = 2
    # A download whose client has accepted nothing for this long (its next chunk could
    # not be written) is aborted: it gives back its slot, connection and snapshot.
    download_idle_seconds: float = 30.0
    # Live tail: identical subscriptions share one execution (off only to measure).
    live_sharing: bool = True
    live_poll_seconds: float = 1.0
    # Open websockets' API keys are re-checked against the database this often, so a
    # revocation whose bus notice was lost still closes them (the contract: 5 s).
    ws_recheck_seconds: float = 2.0
    # Bounds on websockets: operations in flight on one socket, and sockets one
    # credential (an API key, a console user) may hold open in one process.
    ws_max_operations: int = 25
    ws_max_sockets_per_key: int = 50
    # Integrity: checkpoints are signed by this Ed25519 seed (base64), or by
    # one generated into the data folder; the log name is the key's name too.
    signing_key: str | None = None
    log_name: str = "auditlog.local"
    seal_interval_seconds: float = 1.0
    # A retention cut deletes nothing it would not have deleted before for this
    # many days (a mistyped set-plan can be undone); holds released wait too.
    retention_grace_days: int = DEFAULT_RETENTION_GRACE_DAYS
    # Every statement of the service's pool is cancelled past this (PostgreSQL's
    # statement_timeout): no request can hold a connection and a core for ever.
    # Maintenance and migrations (owner connections) are not bounded by it.
    statement_timeout_seconds: float = 30.0
    # Ingest: events each API key may send a second, and the burst it may send at
    # once (a token bucket per key, in each server process); 0: no limit.
    ingest_events_per_second: int = 5000
    ingest_burst_events: int = 10_000
    # GET /metrics answers 404 without it, and requires it as a bearer token with it.
    metrics_token: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        if env is None:
            merged = {k: v for k, v in dotenv_values(".env").items() if v is not None}
            merged.update(os.environ)
            env = merged
        data_dir = Path(env["AUDITLOG_DATA_DIR"]) if env.get("AUDITLOG_DATA_DIR") else None
        geoip = env.get("AUDITLOG_GEOIP_DB") or None
        geoip_default = geoip != "none"
        if geoip == "none":
            geoip = None
        if geoip and not Path(geoip).is_file():
            raise ConfigError(f"AUDITLOG_GEOIP_DB: no such file: {geoip}")
        ingest_rate, ingest_burst = _ingest_rate(env)
        settings = cls(
            database_url=env.get("DATABASE_URL") or None,
            database_read_urls=_read_urls(env.get("DATABASE_READ_URL")),
            redis_url=env.get("REDIS_URL") or None,
            data_dir=data_dir or _default_data_dir(),
            geoip_db=Path(geoip) if geoip else None,
            geoip_default=geoip_default,
            secret_key=env.get("AUDITLOG_SECRET_KEY", ""),
            jwt_secret=env.get("AUDITLOG_JWT_SECRET") or None,
            jwks_url=env.get("AUDITLOG_JWKS_URL") or None,
            jwt_issuer=env.get("AUDITLOG_JWT_ISSUER") or None,
            jwt_audience=env.get("AUDITLOG_JWT_AUDIENCE") or None,
            allow_private_destinations=_flag(env.get("AUDITLOG_ALLOW_PRIVATE_DESTINATIONS")),
            live_sharing=env.get("AUDITLOG_LIVE_SHARING", "1").strip() != "0",
            live_poll_seconds=_positive_float(env, "AUDITLOG_LIVE_POLL_SECONDS", 1.0),
            ws_recheck_seconds=_positive_float(env, "AUDITLOG_WS_RECHECK_SECONDS", 2.0),
            ws_max_operations=_at_least_one(env, "AUDITLOG_WS_MAX_OPERATIONS", 25, most=1000),
            ws_max_sockets_per_key=_at_least_one(
                env, "AUDITLOG_WS_MAX_SOCKETS_PER_KEY", 50, most=100_000
            ),
            export_link_ttl_seconds=_seconds(env, "AUDITLOG_EXPORT_LINK_TTL_SECONDS", 3600),
            public_url=_public_url(env.get("AUDITLOG_PUBLIC_URL") or None),
            exports_per_minute=_count(env, "AUDITLOG_EXPORTS_PER_MINUTE", 10, most=100_000),
            downloads_per_workspace=_at_least_one(
                env, "AUDITLOG_DOWNLOADS_PER_WORKSPACE", 2, most=1000
            ),
            download_idle_seconds=_positive_float(env, "AUDITLOG_DOWNLOAD_IDLE_SECONDS", 30.0),
            signing_key=env.get("AUDITLOG_SIGNING_KEY") or None,
            log_name=_log_name(env.get("AUDITLOG_LOG_NAME") or "auditlog.local"),
            seal_interval_seconds=_positive_float(env, "AUDITLOG_SEAL_INTERVAL_SECONDS", 1.0),
            retention_grace_days=_count(
                env, "AUDITLOG_RETENTION_GRACE_DAYS", DEFAULT_RETENTION_GRACE_DAYS, most=365
            ),
            statement_timeout_seconds=_positive_float(
                env, "AUDITLOG_STATEMENT_TIMEOUT_SECONDS", 30.0
            ),
            ingest_events_per_second=ingest_rate,
            ingest_burst_events=ingest_burst,
            metrics_token=_metrics_token(env.get("AUDITLOG_METRICS_TOKEN") or None),
        )
        if settings.database_read_urls and not settings.database_url:
            raise ConfigError("DATABASE_READ_URL: needs DATABASE_URL (the primary) too")
        if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://")):
            raise ConfigError("REDIS_URL: must start with redis:// or rediss://")
        if (settings.jwt_secret or settings.jwks_url) and not (
            settings.jwt_issuer and settings.jwt_audience
        ):
            # Accepted, but said: without both, any token the same key signed for
            # another application (or another issuer) signs in to the console.
            log.warning(
                "console session tokens are accepted without an issuer or audience check: "
                "set AUDITLOG_JWT_ISSUER and AUDITLOG_JWT_AUDIENCE"
            )
        if settings.secret_key and len(settings.secret_key) < 32:
            # Accepted (the contract sets no length), but said: links, cursors and
            # stored credentials are only as safe as this key.
            log.warning(
                "AUDITLOG_SECRET_KEY is %d characters long: use 32 or more random "
                "characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')",
                len(settings.secret_key),
            )
        return settings

    def with_secret_key(self) -> Settings:
        """Return settings with a secret key, generating and keeping one in the data dir.

        Without AUDITLOG_SECRET_KEY a single node still needs a stable key (signed
        links and cursors must survive a restart), so one is made once and kept
        in `<data_dir>/secret_key` with mode 0600.
        """
        if self.secret_key:
            return self
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written whole to a private file, then linked into place: a process
            # starting beside this one never reads a half-written key.
            tmp = path.with_name(f".secret_key.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                tmp.unlink()
        key = path.read_text().strip()
        return Settings(
            **{**self.__dict__, "secret_key": key},
        )
