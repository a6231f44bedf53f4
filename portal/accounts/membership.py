"""Who may get an account: sign-up (open, or by a single-use invite link), the invites an
admin makes, accounts an admin creates, and admin password resets that force a change at
the next sign-in. Services flush; callers commit."""

from __future__ import annotations

import datetime as dt
import secrets

from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select

from portal import signals
from portal.accounts import stepup
from portal.accounts.models import Invite, User
from portal.accounts.passwords import check_password_strength, ph
from portal.accounts.settings import signup_open
from portal.accounts.tokens import revoke_all_tokens, sha256
from portal.accounts.users import create_user, normalize_email, normalize_username, user_count
from portal.db import utcnow
from portal.errors import AccessDenied, Conflict, NotFound, PortalError, ValidationError
from portal.extensions import db
from portal.validation import get_int, get_str

CLOSED_MESSAGE = (
    "signup is closed: this portal is by invitation only; ask an admin for an invite link"
)
INVITE_PREFIX = "inv_"
INVITE_TTL = 7 * 24 * 3600  # seconds, when the admin does not choose
INVITE_TTL_MIN, INVITE_TTL_MAX = 300, 90 * 24 * 3600
ROLES = ("user", "admin")


class InviteRefused(AccessDenied):
    """This invite link cannot be used."""

    code = "invite_invalid"


class PasswordChangeRequired(AccessDenied):
    """An admin set this password: a new one must be chosen before anything else."""

    code = "password_change_required"


def _refused(message: str, code: str) -> InviteRefused:
    err = InviteRefused(message)
    err.code = code
    return err


def _require_admin(actor: User | None, what: str) -> None:
    if actor is None or not actor.is_admin:
        raise AccessDenied(f"only admins can {what}")


def _role(data: dict) -> str:
    role = get_str(data, "role", required=False, max_len=16) or "user"
    if role not in ROLES:
        raise ValidationError("role must be user or admin", field="role")
    return role


# ---------------------------------------------------------------- invites


def create_invite(actor: User, data: dict) -> tuple[Invite, str]:
    """A new invite: `email` (optional: only that address may use it), `role` (user | admin),
    `expires_in` (seconds). Returns (invite, raw token); the raw token is never stored."""
    _require_admin(actor, "invite people")
    email = normalize_email(data) if get_str(data, "email", required=False) else None
    role = _role(data)
    ttl = get_int(
        data,
        "expires_in",
        default=INVITE_TTL,
        min_value=INVITE_TTL_MIN,
        max_value=INVITE_TTL_MAX,
        label="expiry",
    )
    raw = INVITE_PREFIX + secrets.token_urlsafe(32)  # 256 random bits
    invite = Invite(
        token_hash=sha256(raw),
        email=email,
        role=role,
        created_by=actor.id,
        expires_at=utcnow() + dt.timedelta(seconds=ttl),
    )
    db.session.add(invite)
    db.session.flush()
    signals.send(signals.user_invited, email=email, role=role, actor=actor)
    return invite, raw


def list_invites(actor: User, limit: int = 50, offset: int = 0) -> tuple[list[Invite], int]:
    """Newest first, whatever their state (pending, used, expired, revoked)."""
    _require_admin(actor, "see invites")
    total = db.session.scalar(select(func.count(Invite.id))) or 0
    stmt = select(Invite).order_by(Invite.id.desc()).limit(limit).offset(offset)
    return list(db.session.scalars(stmt)), total


def get_invite(actor: User, invite_id) -> Invite:
    _require_admin(actor, "see invites")
    invite = db.session.get(Invite, invite_id) if isinstance(invite_id, int) else None
    if invite is None:
        raise NotFound("invite not found")
    return invite


def revoke_invite(actor: User, invite: Invite) -> None:
    _require_admin(actor, "revoke invites")
    if invite.used_at is not None:
        raise Conflict("this invite was already used; deactivate the account instead")
    if invite.revoked_at is None:
        invite.revoked_at = utcnow()
        db.session.flush()
        signals.send(signals.invite_revoked, invite_id=invite.id, email=invite.email, actor=actor)


def find_invite(raw) -> Invite:
    """The usable invite behind a raw token, or InviteRefused saying why not."""
    if not isinstance(raw, str) or not raw.startswith(INVITE_PREFIX) or len(raw) > 128:
        raise _refused(
            "this invite link is not valid; ask an admin for a new one", "invite_invalid"
        )
    invite = db.session.scalar(select(Invite).where(Invite.token_hash == sha256(raw)))
    if invite is None:
        raise _refused(
            "this invite link is not valid; ask an admin for a new one", "invite_invalid"
        )
    status = invite.status()
    if status == "used":
        raise _refused(
            "this invite link was already used; sign in, or ask an admin for a new one",
            "invite_used",
        )
    if status == "revoked":
        raise _refused("this invite link was revoked; ask an admin for a new one", "invite_revoked")
    if status == "expired":
        raise _refused("this invite link has expired; ask an admin for a new one", "invite_expired")
    return invite


def admit(invite_raw, email: str) -> Invite | None:
    """May a new account be made for `email`? None: yes, sign-up is open (or this is the first
    account). An Invite: yes, through it (spend it once the user exists). Else AccessDenied."""
    if invite_raw not in (None, ""):
        invite = find_invite(invite_raw)
        if invite.email and invite.email != email:
            err = _refused("this invite is for another email address", "invite_email")
            err.field = "email"
            raise err
        return invite
    if user_count() == 0 or signup_open():
        return None
    err = AccessDenied(CLOSED_MESSAGE)
    err.code = "signup_closed"
    raise err


def spend(invite: Invite | None, user: User) -> None:
    """Mark the invite used by `user`: one atomic UPDATE, so of two sign-ups racing on one
    link exactly one gets it (the other's whole request rolls back)."""
    if invite is None:
        return
    now = utcnow()
    still_valid = (Invite.revoked_at.is_(None), Invite.expires_at > now)
    if not db.spend_once(Invite, invite.id, *still_valid, used_at=now, used_by=user.id):
        raise _refused(
            "this invite link was already used; sign in, or ask an admin for a new one",
            "invite_used",
        )
    db.session.refresh(invite)


def signup_field_errors(*, email, username, password) -> dict[str, str]:
    """Every problem of a sign-up form at once (a page shows them all in one submit);
    sign_up still checks each one itself."""
    errors: dict[str, str] = {}
    data = {"email": email, "username": username}
    for field, check in (
        ("email", lambda: normalize_email(data)),
        ("username", lambda: normalize_username(data)),
        ("password", lambda: check_password_strength(password)),
    ):
        try:
            check()
        except PortalError as err:
            errors[err.field or field] = err.message
    return errors


def sign_up(*, email, username, password, invite=None) -> User:
    """Self-service sign-up (page and /api/signup). Closed sign-up answers 403 before the
    input is even looked at, unless an invite comes along."""
    if invite is not None and not isinstance(invite, str):
        raise ValidationError("invite must be a string", field="invite")
    if not invite:
        admit(None, "")  # raises when closed
    else:
        find_invite(invite)
    data = {"email": email, "username": username}
    email = normalize_email(data)
    normalize_username(data)
    check_password_strength(password)
    admitted = admit(invite, email)
    user = create_user(
        email=email,
        username=username,
        password=password,
        role=admitted.role if admitted else None,
        check_open=False,
    )
    spend(admitted, user)
    signals.send(
        signals.user_created, user=user, actor=None, how="invite" if admitted else "signup"
    )
    return user


# ---------------------------------------------------------------- accounts made by an admin


def generate_password() -> str:
    return secrets.token_urlsafe(12)  # 96 random bits, 16 characters


def admin_create_user(actor: User, data: dict) -> tuple[User, str | None]:
    """An account made by an admin: `email`, `username`, `role`, `password` (optional: one is
    generated and returned, to be shown once). The user must change it at first sign-in."""
    _require_admin(actor, "create users")
    stepup.require(actor, "user.create")
    role = _role(data)
    password = data.get("password")
    generated = None
    if password in (None, ""):
        password = generated = generate_password()
    else:
        check_password_strength(password)
    user = create_user(
        email=data.get("email"),
        username=data.get("username"),
        password=password,
        role=role,
        check_open=False,
    )
    user.must_change_password = True
    db.session.flush()
    signals.send(signals.user_created, user=user, actor=actor, how="admin")
    return user, generated


def admin_reset_password(actor: User, user: User, password=None) -> str | None:
    """Set a new password (given, or generated and returned once), end every session, token
    and API key of the user, and make them choose their own at the next sign-in."""
    _require_admin(actor, "reset passwords")
    stepup.require(actor, "user.password_reset")
    if user.id == actor.id:
        raise Conflict("change your own password on your profile page")
    generated = None
    if password in (None, ""):
        password = generated = generate_password()
    else:
        check_password_strength(password)
    user.password_hash = ph.hash(password)
    user.must_change_password = True
    user.api_key_hash = None
    user.api_key_prefix = None
    revoke_all_tokens(user)
    signals.send(signals.password_reset_by_admin, user=user, actor=actor)
    return generated


def change_required_password(user: User, new_password) -> None:
    """The forced change after an admin set the password. The caller signs the user in again
    (every older session and token ends here)."""
    check_password_strength(new_password, field="new_password")
    if user.password_hash:
        try:
            same = ph.verify(user.password_hash, new_password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            same = False
        if same:
            raise ValidationError(
                "choose a new password, not the one you were given", field="new_password"
            )
    user.password_hash = ph.hash(new_password)
    user.must_change_password = False
    revoke_all_tokens(user)


def password_change_gate(user: User, new_password=None) -> None:
    """API sign-in of a user whose password an admin set: refused (403) unless the request
    carries `new_password`, which then replaces it."""
    if not user.must_change_password:
        return
    if new_password in (None, ""):
        raise PasswordChangeRequired(
            "your password was set by an admin and must be changed: send the same request "
            "again with new_password",
            password_change_required=True,
        )
    change_required_password(user, new_password)
