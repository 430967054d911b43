"""Who is calling: API keys (stored hashed) and console session JWTs.

A token binds the caller to one workspace and a role. Platform ingest keys
bind to no workspace: each event names its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from typing import Any

import asyncpg
import jwt

from auditlog.errors import AuthError
from auditlog.model import SESSION_ROLES, Principal, Role
from auditlog.storage.database import EITHER_PLANS, acquire_with_plans
from auditlog.storage.keys import read_api_key
from auditlog.storage.workspaces import read_workspace

KEY_PREFIX = "alk_"
REVOKED_KEY = "this API key has been revoked"
EXPIRED_SESSION = "the session has expired"


def hash_secret(secret: str) -> bytes:
    # The secret is 256 random bits: a fast hash is enough, a slow KDF adds nothing.
    return hashlib.sha256(secret.encode()).digest()


def new_key_material() -> tuple[str, str, str]:
    """(key_id, secret, token): the token is what the user keeps."""
    key_id = "key_" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{KEY_PREFIX}{key_id}.{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, _, secret = token[len(KEY_PREFIX) :].partition(".")
    if not key_id.startswith("key_") or not secret or len(token) > 200:
        return None
    return key_id, secret


class SessionTokens:
    """Verifies console session JWTs: HS256 with AUDITLOG_JWT_SECRET, or asymmetric
    keys published at AUDITLOG_JWKS_URL. The algorithm is never taken on the
    token's word: HS256 only with the secret, RS/PS/ES/EdDSA only with the JWKS.
    With an issuer or an audience configured, a token must carry that `iss`, and
    that value among its `aud`: an identity provider signs tokens for many
    applications with the same keys, and only those meant for this one may sign in."""

    _ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
    _REQUIRED = ("exp", "sub", "workspace", "role")
    # An unknown `kid` refetches the JWKS at most this often: tokens with made-up
    # key ids cannot make the service hammer the identity provider.
    JWKS_REFETCH_COOLDOWN = 30.0

    def __init__(
        self,
        secret: str | None,
        jwks_url: str | None = None,
        *,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        self._secret = secret
        self._jwks = (
            jwt.PyJWKClient(
                jwks_url,
                cache_keys=True,
                lifespan=300,
                timeout=5,
                cooldown_duration=self.JWKS_REFETCH_COOLDOWN,
            )
            if jwks_url
            else None
        )
        self._issuer = issuer
        self._audience = audience
        required = list(self._REQUIRED)
        if issuer is not None:
            required.append("iss")
        if audience is not None:
            required.append("aud")
        # Without a configured audience an `aud` is not checked: it names some
        # application, and the service has not been told which one it is.
        self._options: dict[str, Any] = {"require": required, "verify_aud": audience is not None}

    @property
    def enabled(self) -> bool:
        return bool(self._secret or self._jwks)

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            options=self._options,  # type: ignore[arg-type]
            issuer=self._issuer,
            audience=self._audience,
        )
        return claims

    async def claims(self, token: str) -> dict[str, Any]:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
            if alg == "HS256" and self._secret:
                return self._decode(token, self._secret, "HS256")
            if alg in self._ASYMMETRIC and self._jwks is not None:
                signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                return self._decode(token, signing_key.key, str(alg))
        except jwt.ExpiredSignatureError:
            raise AuthError(EXPIRED_SESSION) from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        raise AuthError("invalid token: unsupported or unconfigured signing algorithm")


async def authenticate(
    pool: asyncpg.Pool, authorization: str | None, sessions: SessionTokens
) -> Principal:
    """The principal behind an `Authorization: Bearer ...` value, or AuthError.

    A pooled connection is taken only for the lookup itself, never while a
    token's signature is checked (which may fetch the JWKS over the network):
    a slow identity provider cannot hold the pool.
    """
    if not authorization:
        raise AuthError("missing Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    parts = split_token(token)
    if parts is not None:
        # One lookup by primary key, planned alike either way: the connection's
        # plan mode is left as it is (no SET on the way to a page read).
        async with acquire_with_plans(pool, EITHER_PLANS) as conn:
            return await _authenticate_key(conn, *parts)
    return await _authenticate_jwt(pool, token, sessions)


async def _authenticate_key(conn: asyncpg.Connection, key_id: str, secret: str) -> Principal:
    key = await read_api_key(conn, key_id)
    if key is None or not hmac.compare_digest(key.secret_hash, hash_secret(secret)):
        raise AuthError("invalid API key")
    if key.revoked_at is not None:
        raise AuthError(REVOKED_KEY)
    return Principal(workspace_id=key.workspace_id, role=Role(key.role), key_id=key.id)


async def _authenticate_jwt(pool: asyncpg.Pool, token: str, sessions: SessionTokens) -> Principal:
    if not sessions.enabled:
        raise AuthError("invalid token")
    claims = await sessions.claims(token)
    role, workspace = claims.get("role"), claims.get("workspace")
    if role not in SESSION_ROLES or not isinstance(workspace, str):
        raise AuthError("invalid token: role must be owner, admin or member")
    async with acquire_with_plans(pool, EITHER_PLANS) as conn:
        known = await read_workspace(conn, workspace) is not None
    if not known:
        raise AuthError("invalid token: unknown workspace")
    email = claims.get("email")
    return Principal(
        workspace_id=workspace,
        role=Role(role),
        subject=str(claims["sub"]),
        email=email if isinstance(email, str) else None,
        expires_at=float(int(claims["exp"])),  # as PyJWT read it to check it
    )
