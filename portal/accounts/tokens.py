"""What a signed-in client holds: access JWTs, rotating refresh tokens (a reused one revokes its
family), API keys, and revoking all of a user's credentials at once. Services flush; callers commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid

import jwt
from flask import current_app
from sqlalchemy import select, update

from portal import signals
from portal.accounts.models import RefreshToken, User
from portal.db import utcnow
from portal.errors import AuthenticationRequired
from portal.extensions import db

API_KEY_PREFIX = "wxp_"
JWT_ISSUER = "webterm-portal"
JWT_AUDIENCE = "webterm-portal-api"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def revoke_all_tokens(user: User) -> None:
    """Every JWT, refresh token, API key, browser session and live terminal of this user ends
    now. The API key too: a leaked key must not outlive "sign out everywhere" or a new password."""
    user.token_version = (user.token_version or 0) + 1
    user.api_key_hash = None
    user.api_key_prefix = None
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    db.session.flush()
    signals.send(signals.tokens_revoked, user=user)


def _jwt_key() -> bytes:
    return hmac.new(current_app.config["SECRET_KEY"].encode(), b"jwt-v1", "sha256").digest()


def issue_jwt(user: User, mfa: bool = False, mfa_at: int | None = None) -> tuple[str, int]:
    """An access JWT. `mfa`: the sign-in behind it passed a second factor just now; `mfa_at`:
    it passed one at that earlier time (a refresh carries its sign-in's check)."""
    ttl = int(current_app.config["PORTAL_JWT_TTL"])
    now = utcnow()
    claims = {
        "sub": str(user.id),
        "ver": user.token_version,
        "type": "access",
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "iat": now,
        "exp": now + dt.timedelta(seconds=ttl),
        "jti": uuid.uuid4().hex,
    }
    if mfa:  # the sign-in behind this token passed a second factor, at this time
        claims["mfa_at"] = int(now.timestamp())
    elif mfa_at is not None:
        claims["mfa_at"] = int(mfa_at)
    return jwt.encode(claims, _jwt_key(), algorithm="HS256"), ttl


def user_from_jwt(token: str) -> User | None:
    try:
        claims = jwt.decode(
            token,
            _jwt_key(),
            algorithms=["HS256"],
            audience=JWT_AUDIENCE,
            issuer=JWT_ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        return None
    if claims.get("type") != "access":
        return None
    try:
        user = db.session.get(User, int(claims["sub"]))
    except (TypeError, ValueError):
        return None
    if user is None or not user.is_active or claims.get("ver") != user.token_version:
        return None
    return user


def jwt_mfa_at(token: str) -> int | None:
    """The `mfa_at` claim of a valid access JWT (when its sign-in passed a second factor)."""
    try:
        claims = jwt.decode(
            token, _jwt_key(), algorithms=["HS256"], audience=JWT_AUDIENCE, issuer=JWT_ISSUER
        )
    except jwt.PyJWTError:
        return None
    value = claims.get("mfa_at")
    return value if isinstance(value, int) else None


def issue_refresh_token(user: User, family: str | None = None, mfa_at: int | None = None) -> str:
    token = "rt_" + secrets.token_urlsafe(32)
    ttl = int(current_app.config["PORTAL_REFRESH_TTL"])
    db.session.add(
        RefreshToken(
            user_id=user.id,
            token_hash=sha256(token),
            family=family or uuid.uuid4().hex,
            expires_at=utcnow() + dt.timedelta(seconds=ttl),
            mfa_at=mfa_at,
        )
    )
    db.session.flush()
    return token


def token_pair(
    user: User, family: str | None = None, mfa: bool = False, mfa_at: int | None = None
) -> dict:
    """An access JWT and a refresh token; the second-factor check (`mfa`: now, `mfa_at`: the
    family's earlier one) goes into both, so every refresh carries it unchanged."""
    if mfa:
        mfa_at = int(utcnow().timestamp())
    token, ttl = issue_jwt(user, mfa_at=mfa_at)
    refresh = issue_refresh_token(user, family=family, mfa_at=mfa_at)
    return {"token": token, "refresh_token": refresh, "expires_in": ttl}


def rotate_refresh_token(raw) -> tuple[User, dict]:
    """Exchange a refresh token for a new pair. A reused (already rotated) token revokes
    its whole family: whoever stole it and whoever holds the newer one must sign in again."""
    invalid = AuthenticationRequired("invalid or expired refresh token")
    if not isinstance(raw, str) or not raw.startswith("rt_") or len(raw) > 200:
        raise invalid
    row = db.session.scalar(select(RefreshToken).where(RefreshToken.token_hash == sha256(raw)))
    if row is None or row.revoked_at is not None:
        raise invalid
    now = utcnow()
    if row.used_at is not None:
        signals.send(signals.refresh_reuse_detected, user_id=row.user_id, family=row.family)
        _revoke_family(row.family, now)
        raise invalid
    if row.expires_at <= now:
        raise invalid
    user = db.session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise invalid
    # Spend it atomically: of concurrent uses only one conditional UPDATE matches the row (the
    # others wait for its lock and then find it used); a loser is a reuse like any other.
    if not db.spend_once(RefreshToken, row.id, RefreshToken.revoked_at.is_(None), used_at=now):
        signals.send(signals.refresh_reuse_detected, user_id=row.user_id, family=row.family)
        _revoke_family(row.family, now)
        raise invalid
    return user, token_pair(user, family=row.family, mfa_at=row.mfa_at)


def _revoke_family(family: str, now: dt.datetime) -> None:
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    db.commit_now("a reused refresh token revokes its family although the request fails")


def user_from_api_key(key: str) -> User | None:
    if not isinstance(key, str) or not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        return None
    user = db.session.scalar(select(User).where(User.api_key_hash == sha256(key)))
    if user is None or not user.is_active:
        return None
    return user


def user_from_token(token: str) -> User | None:
    """A Bearer value: an API key or a JWT."""
    if token.startswith(API_KEY_PREFIX):
        return user_from_api_key(token)
    return user_from_jwt(token)
