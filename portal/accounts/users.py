"""User accounts: create, look up, password sign-in and change, roles, activation, the list.
Services flush; callers commit."""

from __future__ import annotations

import re
import secrets

from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select

from portal import metrics, signals
from portal.accounts import factors, stepup, tokens
from portal.accounts.models import User
from portal.accounts.passwords import PASSWORD_MAX, check_password_strength, dummy_hash, hasher
from portal.accounts.settings import signup_open
from portal.accounts.tokens import revoke_all_tokens
from portal.db import utcnow
from portal.errors import (
    AccessDenied,
    AuthenticationRequired,
    Conflict,
    NotFound,
    ValidationError,
)
from portal.extensions import db
from portal.validation import get_str

EMAIL_MAX, USERNAME_MAX = 254, 32  # the sign-up page's maxlength attributes come from here
# what the account forms tell the browser (maxlength), from the limits validated here
#: A sign-in name (email or username) and a password checked against the stored hash.
LOGIN_MAX, CURRENT_PASSWORD_MAX = 254, 1024
USER_SEARCH_MAX = 100  # the Users page's search box
FORM_LIMITS = {"email": EMAIL_MAX, "username": USERNAME_MAX, "password": PASSWORD_MAX}
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,31}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def normalize_email(data: dict, key: str = "email") -> str:
    email = get_str(data, key, max_len=EMAIL_MAX).lower()
    if not EMAIL_RE.match(email):
        raise ValidationError("email is not a valid address", field=key)
    return email


def normalize_username(data: dict, key: str = "username") -> str:
    username = get_str(data, key, max_len=USERNAME_MAX)
    if not USERNAME_RE.match(username):
        raise ValidationError(
            "username must be 2-32 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field=key,
        )
    return username


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
    if not login or "\x00" in login or len(login) > LOGIN_MAX:
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
        password_hash=hasher().hash(password) if password else None,
        role=role or ("admin" if first else "user"),
        active=True,
        token_version=0,
    )
    db.session.add(user)
    db.session.flush()
    return user


def authenticate(login, password) -> User:
    """Password sign-in. One message for every failure: no account enumeration (the audit
    log, for admins, keeps the real reason)."""
    try:
        user = _authenticate(login, password)
    except AuthenticationRequired as err:
        metrics.SIGNIN_FAILURES.inc()
        signals.send(signals.sign_in_failed, login=login, reason=getattr(err, "audit_reason", ""))
        raise
    signals.send(signals.signed_in, user=user, method="password")
    return user


def _authenticate(login, password) -> User:
    def failure(reason: str) -> AuthenticationRequired:
        err = AuthenticationRequired("invalid login or password")
        err.audit_reason = reason  # for the audit log only: never in the answer (enumeration)
        return err

    if (
        not isinstance(login, str)
        or not isinstance(password, str)
        or len(password) > CURRENT_PASSWORD_MAX
    ):
        raise failure("malformed")
    if "\x00" in login or "\x00" in password:
        raise failure("malformed")
    user = find_user(login)
    h = hasher()
    if user is None or not user.password_hash:
        try:
            h.verify(dummy_hash(h), password or "x")
        except (VerificationError, InvalidHashError):
            pass
        raise failure("unknown account" if user is None else "no password set")
    try:
        h.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise failure("wrong password") from None
    if not user.is_active:
        raise failure("account deactivated")
    if h.check_needs_rehash(user.password_hash):
        user.password_hash = h.hash(password)
    user.last_login_at = utcnow()
    db.session.flush()
    return user


def verify_password(user: User, password) -> bool:
    """Is this the user's password? (Re-authentication before a sensitive change.)"""
    if (
        not user.password_hash
        or not isinstance(password, str)
        or len(password) > CURRENT_PASSWORD_MAX
    ):
        return False
    try:
        return hasher().verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def change_password(user: User, current_password, new_password) -> None:
    if user.password_hash:
        try:
            hasher().verify(
                user.password_hash, current_password if isinstance(current_password, str) else ""
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise ValidationError("current password is wrong", field="current_password") from None
    check_password_strength(new_password, field="new_password")
    user.password_hash = hasher().hash(new_password)
    revoke_all_tokens(user)


def sole_admin_id() -> int | None:
    """The id of the only active admin when there is exactly one: they can be neither
    demoted nor deactivated (the portal would have no admin left)."""
    ids = db.session.scalars(
        select(User.id).where(User.role == "admin", User.active.is_(True)).limit(2)
    ).all()
    return ids[0] if len(ids) == 1 else None


def set_role(actor: User, user: User, role: str) -> None:
    if not actor.is_admin:
        raise AccessDenied("only admins can change roles")
    stepup.require(actor, "user.role")
    if role not in {"admin", "user"}:
        raise ValidationError("role must be admin or user", field="role")
    if user.role == "admin" and role != "admin" and user.id == sole_admin_id():
        raise Conflict("the last admin cannot be demoted")
    demoted = user.role == "admin" and role != "admin"
    changed = user.role != role
    user.role = role
    db.session.flush()
    if changed:
        signals.send(signals.user_role_changed, user=user, role=role, actor=actor)
    if demoted:  # what a global admin could open, they may no longer (live terminals)
        signals.send(signals.user_demoted, user=user, actor=actor)


def set_active(actor: User, user: User, active: bool) -> None:
    if not actor.is_admin:
        raise AccessDenied("only admins can deactivate users")
    stepup.require(actor, "user.active")
    if not active and user.is_admin and user.id == sole_admin_id():
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


def regenerate_api_key(user: User, terminal: bool = True) -> str:
    """A new key (the old one dies). `terminal=False` makes a key that cannot open terminals.
    A user with a second factor passes a step-up first, and the key records that."""
    stepup.require(user, "apikey.create")
    if user.api_key_prefix:
        signals.send(signals.api_key_revoked, user=user, prefix=user.api_key_prefix)
    key = tokens.API_KEY_PREFIX + secrets.token_urlsafe(32)  # 256 random bits
    user.api_key_hash = tokens.sha256(key)
    user.api_key_prefix = key[: len(tokens.API_KEY_PREFIX) + 6]
    user.api_key_mfa = factors.has_factor(user)
    user.api_key_terminal = bool(terminal)
    db.session.flush()
    signals.send(signals.api_key_created, user=user, prefix=user.api_key_prefix)
    return key
