"""Account rules, shared by the pages and the JSON API. Services flush; callers commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import re
import secrets
import uuid
from functools import lru_cache
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app
from sqlalchemy import func, select, update

from portal import signals
from portal.accounts.models import OAuthIdentity, RefreshToken, Setting, User
from portal.db import utcnow
from portal.errors import (
    AccessDenied,
    AuthenticationRequired,
    Conflict,
    NotFound,
    TooLarge,
    ValidationError,
)
from portal.extensions import db
from portal.validation import get_str

ph = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the user does not exist, so login timing does not reveal accounts.
_DUMMY_HASH = ph.hash(secrets.token_urlsafe(16))

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,31}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
API_KEY_PREFIX = "wxp_"
JWT_ISSUER = "webterm-portal"
JWT_AUDIENCE = "webterm-portal-api"
PASSWORD_MIN, PASSWORD_MAX = 8, 128


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    path = Path(__file__).with_name("common_passwords.txt")
    return frozenset(line.strip().lower() for line in path.read_text().splitlines() if line)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- validation


def check_password_strength(password, field: str = "password") -> str:
    if not isinstance(password, str) or password == "":
        raise ValidationError("password is required", field=field)
    if len(password) < PASSWORD_MIN:
        raise ValidationError(f"password must be at least {PASSWORD_MIN} characters", field=field)
    if len(password) > PASSWORD_MAX:
        raise ValidationError(f"password must be at most {PASSWORD_MAX} characters", field=field)
    if password.lower() in _common_passwords():
        raise ValidationError("that password is too common; choose another", field=field)
    return password


def normalize_email(data: dict, key: str = "email") -> str:
    email = get_str(data, key, max_len=254).lower()
    if not EMAIL_RE.match(email):
        raise ValidationError("email is not a valid address", field=key)
    return email


def normalize_username(data: dict, key: str = "username") -> str:
    username = get_str(data, key, max_len=32)
    if not USERNAME_RE.match(username):
        raise ValidationError(
            "username must be 2-32 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field=key,
        )
    return username


# ---------------------------------------------------------------- settings


def get_setting(key: str, default: str | None = None) -> str | None:
    row = db.session.get(Setting, key)
    return row.value if row else default


def set_setting(key: str, value: str) -> None:
    row = db.session.get(Setting, key)
    if row is None:
        db.session.add(Setting(key=key, value=value))
    else:
        row.value = value
    db.session.flush()


def signup_open() -> bool:
    default = "1" if current_app.config["PORTAL_SIGNUP_OPEN"] else "0"
    return get_setting("signup_open", default) == "1"


def set_signup_open(actor: User, is_open: bool) -> None:
    if not actor.is_admin:
        raise AccessDenied("only admins can change signup")
    set_setting("signup_open", "1" if is_open else "0")


# ---------------------------------------------------------------- users


def user_count() -> int:
    return db.session.scalar(select(func.count(User.id))) or 0


MAX_ID = 2**31 - 1


def as_id(value) -> int | None:
    """A database id from an int or a string of ASCII digits, within range; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit()) or len(value) > 10:
            return None
        value = int(value)
    if isinstance(value, int) and 1 <= value <= MAX_ID:
        return value
    return None


def find_user(login: str) -> User | None:
    """By email or username, case-insensitively."""
    login = (login or "").strip().lower() if isinstance(login, str) else ""
    if not login or "\x00" in login or len(login) > 254:
        return None
    return db.session.scalar(
        select(User).where((User.email == login) | (User.username_key == login))
    )


def find_user_ref(ref) -> User:
    """A user named by id, email or username (grants, admin). NotFound otherwise."""
    user = None
    uid = as_id(ref)
    if uid is not None:
        user = db.session.get(User, uid)
    elif isinstance(ref, str) and not ref.strip().isdigit():
        user = find_user(ref)
    if user is None:
        raise NotFound("user not found")
    return user


def create_user(
    *,
    email: str,
    username: str,
    password: str | None,
    role: str | None = None,
    check_open: bool = True,
) -> User:
    data = {"email": email, "username": username}
    email = normalize_email(data)
    username = normalize_username(data)
    if password is not None:
        check_password_strength(password)
    first = user_count() == 0
    if check_open and not first and not signup_open():
        raise AccessDenied("signup is closed on this portal; ask an admin for an account")
    if db.session.scalar(select(User.id).where(User.email == email)):
        raise Conflict("that email is already registered", field="email")
    if db.session.scalar(select(User.id).where(User.username_key == username.lower())):
        raise Conflict("that username is taken", field="username")
    user = User(
        email=email,
        username=username,
        username_key=username.lower(),
        password_hash=ph.hash(password) if password else None,
        role=role or ("admin" if first else "user"),
        active=True,
        token_version=0,
    )
    db.session.add(user)
    db.session.flush()
    return user


def authenticate(login, password) -> User:
    """Password sign-in. One message for every failure: no account enumeration."""
    failure = AuthenticationRequired("invalid login or password")
    if not isinstance(login, str) or not isinstance(password, str) or len(password) > 1024:
        raise failure
    if "\x00" in login or "\x00" in password:
        raise failure
    user = find_user(login)
    if user is None or not user.password_hash:
        try:
            ph.verify(_DUMMY_HASH, password or "x")
        except (VerificationError, InvalidHashError):
            pass
        raise failure
    try:
        ph.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise failure from None
    if not user.is_active:
        raise failure
    if ph.check_needs_rehash(user.password_hash):
        user.password_hash = ph.hash(password)
    user.last_login_at = utcnow()
    db.session.flush()
    return user


def change_password(user: User, current_password, new_password) -> None:
    if user.password_hash:
        try:
            ph.verify(
                user.password_hash, current_password if isinstance(current_password, str) else ""
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise ValidationError("current password is wrong", field="current_password") from None
    check_password_strength(new_password, field="new_password")
    user.password_hash = ph.hash(new_password)
    revoke_all_tokens(user)


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


def admin_count() -> int:
    return (
        db.session.scalar(
            select(func.count(User.id)).where(User.role == "admin", User.active.is_(True))
        )
        or 0
    )


def set_role(actor: User, user: User, role: str) -> None:
    if not actor.is_admin:
        raise AccessDenied("only admins can change roles")
    if role not in {"admin", "user"}:
        raise ValidationError("role must be admin or user", field="role")
    if user.role == "admin" and role != "admin" and user.active and admin_count() <= 1:
        raise Conflict("the last admin cannot be demoted")
    demoted = user.role == "admin" and role != "admin"
    user.role = role
    db.session.flush()
    if demoted:  # what a global admin could open, they may no longer (live terminals)
        signals.send(signals.user_demoted, user=user, actor=actor)


def set_active(actor: User, user: User, active: bool) -> None:
    if not actor.is_admin:
        raise AccessDenied("only admins can deactivate users")
    if not active and user.is_admin and user.active and admin_count() <= 1:
        raise Conflict("the last admin cannot be deactivated")
    if not active and user.active:
        user.active = False
        revoke_all_tokens(user)
        signals.send(signals.user_deactivated, user=user, actor=actor)
    elif active:
        user.active = True
    db.session.flush()


def list_users(q: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[User], int]:
    stmt = select(User)
    q = (q or "").replace("\x00", "")[:100]
    if q.strip():
        like = f"%{q.strip().lower()}%"
        stmt = stmt.where((User.username_key.like(like)) | (User.email.like(like)))
    total = db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    users = db.session.scalars(stmt.order_by(User.id).limit(limit).offset(offset)).all()
    return list(users), total


# ---------------------------------------------------------------- tokens


def _jwt_key() -> bytes:
    return hmac.new(current_app.config["SECRET_KEY"].encode(), b"jwt-v1", "sha256").digest()


def issue_jwt(user: User) -> tuple[str, int]:
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


def issue_refresh_token(user: User, family: str | None = None) -> str:
    token = "rt_" + secrets.token_urlsafe(32)
    ttl = int(current_app.config["PORTAL_REFRESH_TTL"])
    db.session.add(
        RefreshToken(
            user_id=user.id,
            token_hash=sha256(token),
            family=family or uuid.uuid4().hex,
            expires_at=utcnow() + dt.timedelta(seconds=ttl),
        )
    )
    db.session.flush()
    return token


def token_pair(user: User) -> dict:
    token, ttl = issue_jwt(user)
    return {"token": token, "refresh_token": issue_refresh_token(user), "expires_in": ttl}


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
        _revoke_family(row.family, now)
        raise invalid
    if row.expires_at <= now:
        raise invalid
    user = db.session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise invalid
    # Spend it atomically: of concurrent uses only one conditional UPDATE matches the row (the
    # others wait for its lock and then find it used); a loser is a reuse like any other.
    spent = db.session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == row.id,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:
        _revoke_family(row.family, now)
        raise invalid
    token, ttl = issue_jwt(user)
    pair = {
        "token": token,
        "refresh_token": issue_refresh_token(user, family=row.family),
        "expires_in": ttl,
    }
    return user, pair


def _revoke_family(family: str, now: dt.datetime) -> None:
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    db.commit_now("a reused refresh token revokes its family although the request fails")


def regenerate_api_key(user: User) -> str:
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)  # 256 random bits
    user.api_key_hash = sha256(key)
    user.api_key_prefix = key[: len(API_KEY_PREFIX) + 6]
    db.session.flush()
    return key


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


# ---------------------------------------------------------------- avatar

AVATAR_MAX = 2 * 1024 * 1024
AVATAR_SIZE = 256


def save_avatar(user: User, stream, declared_size: int | None = None) -> str:
    """Check the upload by content (Pillow), re-encode to a square PNG thumbnail."""
    from PIL import Image, UnidentifiedImageError

    data = stream.read(AVATAR_MAX + 1)
    if len(data) > AVATAR_MAX:
        raise TooLarge("avatar must be at most 2 MB")
    if not data:
        raise ValidationError("avatar file is empty", field="avatar")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            probe.verify()
        if fmt not in {"PNG", "JPEG", "WEBP", "GIF"}:
            raise ValidationError("avatar must be a PNG, JPEG, WebP or GIF image", field="avatar")
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > 40_000_000:
                raise ValidationError("avatar image is too large", field="avatar")
            img.seek(0)
            img = img.convert("RGBA")
            side = min(img.width, img.height)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side))
            img = img.resize((AVATAR_SIZE, AVATAR_SIZE), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            img.save(out, format="PNG", optimize=True)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValidationError(
            "avatar must be a PNG, JPEG, WebP or GIF image", field="avatar"
        ) from None
    folder = Path(current_app.config["PORTAL_UPLOADS_DIR"]) / "avatars"
    folder.mkdir(parents=True, exist_ok=True)
    name = secrets.token_hex(16) + ".png"
    (folder / name).write_bytes(out.getvalue())
    old = user.avatar_file
    user.avatar_file = name
    db.session.flush()
    if old and re.fullmatch(r"[0-9a-f]{32}\.png", old):
        (folder / old).unlink(missing_ok=True)
    return user.avatar_url


# ---------------------------------------------------------------- OAuth identities


def link_identity(user: User, provider: str, subject: str, email: str | None) -> OAuthIdentity:
    existing = db.session.scalar(
        select(OAuthIdentity).where(
            OAuthIdentity.provider == provider, OAuthIdentity.subject == subject
        )
    )
    if existing is not None:
        if existing.user_id != user.id:
            raise Conflict("that account is already linked to another user")
        return existing
    ident = OAuthIdentity(user_id=user.id, provider=provider, subject=subject, email=email)
    db.session.add(ident)
    db.session.flush()
    return ident


def unlink_identity(user: User, provider: str) -> None:
    ident = db.session.scalar(
        select(OAuthIdentity).where(
            OAuthIdentity.user_id == user.id, OAuthIdentity.provider == provider
        )
    )
    if ident is None:
        raise NotFound("that provider is not linked")
    others = [i for i in user.identities if i.id != ident.id]
    if not user.password_hash and not others:
        raise Conflict("this is your only way to sign in; set a password or link another first")
    db.session.delete(ident)
    db.session.flush()


def oauth_sign_in(
    provider: str,
    subject: str,
    email: str | None,
    email_verified: bool,
    suggested_username: str | None,
    invite: str | None = None,
) -> User:
    """Find the user behind an already-linked OAuth identity, or create one (signup open, or a valid `invite`).

    An identity is never linked here to an existing account by email: the portal has not
    verified the addresses of its accounts, so anyone could sign up as victim@corp and receive
    the victim's first OAuth sign-in (pre-account takeover). Linking happens only from a
    signed-in session (the profile's "Link" button); a first sign-in whose email belongs to an
    existing account is refused and changes nothing."""
    if not subject:
        raise AuthenticationRequired("the provider did not identify the account")
    ident = db.session.scalar(
        select(OAuthIdentity).where(
            OAuthIdentity.provider == provider, OAuthIdentity.subject == subject
        )
    )
    if ident is not None:
        if not ident.user.is_active:
            raise AuthenticationRequired("this account is deactivated")
        ident.user.last_login_at = utcnow()
        return ident.user
    email = (email or "").strip().lower() or None
    if email and db.session.scalar(select(User.id).where(User.email == email)):
        raise Conflict(
            "an account with this email already exists; sign in to it first, "
            "then link this provider from your profile"
        )
    if not email or not email_verified:
        raise AccessDenied(
            "the provider did not give a verified email address, so no account can be created"
        )
    from portal.accounts import membership

    admitted = membership.admit(invite, email)  # closed signup: only with a valid invite
    base = re.sub(r"[^A-Za-z0-9_.-]", "", (suggested_username or email.split("@")[0]))[:24]
    if len(base) < 2 or not base[0].isalnum():
        base = "user"
    username, n = base, 1
    while db.session.scalar(select(User.id).where(User.username_key == username.lower())):
        n += 1
        username = f"{base}{n}"
    role = admitted.role if admitted else None
    user = create_user(email=email, username=username, password=None, role=role, check_open=False)
    membership.spend(admitted, user)
    link_identity(user, provider, subject, email)
    user.last_login_at = utcnow()
    return user
