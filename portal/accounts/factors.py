"""What second factors an account has, and checking one: TOTP codes (pyotp), single-use
recovery codes, the per-account failure limit, and the "a factor is required" setting.

The bottom of the accounts services: it imports no other service (only the settings store),
so passkeys (ceremonies), tokens and step-up build on it, and `mfa` (enrolment, removal,
reset: the management that needs step-up or re-authentication) sits on top of them all.
Every event is sent as `signals.mfa_event`; services flush, callers commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pyotp
from flask import current_app
from sqlalchemy import delete, func, select

from portal import signals
from portal.accounts import settings
from portal.accounts.models import MfaThrottle, Passkey, RecoveryCode, TotpFactor, User
from portal.db import utcnow
from portal.errors import AuthenticationRequired, PortalError
from portal.extensions import db
from portal.machines import vault


class TooManyAttempts(PortalError):
    """Too many wrong codes for this account; wait a few minutes and try again."""

    status = 429
    code = "mfa_rate_limited"


def event(user: User, action: str, method: str | None = None, actor: User | None = None, **details):
    signals.send(
        signals.mfa_event,
        user=user,
        action=action,
        method=method,
        actor=actor or user,
        details=details,
    )


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


CODE_MAX = 40  # a typed code as it may come (spaces, dashes): longer is no code of ours


def _normalise(code) -> str:
    if not isinstance(code, str) or len(code) > CODE_MAX:
        return ""  # (refused like a wrong code)
    return "".join(code.split()).replace("-", "").lower()


def totp_factor(user: User) -> TotpFactor | None:
    return db.session.get(TotpFactor, user.id)


def has_totp(user: User) -> bool:
    row = totp_factor(user)
    return row is not None and row.confirmed_at is not None


def has_passkey(user: User) -> bool:
    return bool(db.session.scalar(select(func.count(Passkey.id)).where(Passkey.user_id == user.id)))


def has_factor(user: User) -> bool:
    """An authenticator app or at least one passkey."""
    return has_totp(user) or has_passkey(user)


def required_for_everyone() -> bool:
    return settings.get_setting("mfa_required", "0") == "1"


def needs_enrolment(user: User) -> bool:
    return required_for_everyone() and not has_factor(user)


def recovery_codes_left(user: User) -> int:
    rows = db.session.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    ).all()
    return len(rows)


def passkeys_only(user: User) -> bool:
    return not has_totp(user) and has_factor(user)


def drop_orphan_recovery_codes(user: User) -> None:
    """Recovery codes stand in for a factor; with no factor left they go too."""
    if not has_factor(user):
        db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        db.session.flush()


def match_totp(row: TotpFactor, code) -> int | None:
    """The time step the code belongs to (±1 step), or None. A step at or before the last
    used one is refused: a code works once."""
    code = _normalise(code)
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(vault.decrypt(row.secret_enc))
    now = int(utcnow().timestamp())
    for offset in (-1, 0, 1):
        at = now + offset * totp.interval
        step = at // totp.interval
        if row.last_step is not None and step <= row.last_step:
            continue
        if hmac.compare_digest(totp.at(at), code):
            return step
    return None


def _throttle(user: User) -> MfaThrottle:
    row = db.session.get(MfaThrottle, user.id)
    if row is None:
        row = MfaThrottle(user_id=user.id, failures=0, window_start=utcnow())
        db.session.add(row)
    return row


def check_throttle(user: User) -> None:
    row = db.session.get(MfaThrottle, user.id)
    if row is None:
        return
    window = dt.timedelta(seconds=current_app.config["PORTAL_MFA_FAILURE_WINDOW"])
    if utcnow() - row.window_start > window:
        row.failures = 0
        row.window_start = utcnow()
        return
    if row.failures >= current_app.config["PORTAL_MFA_MAX_FAILURES"]:
        raise TooManyAttempts()


def count_failure(user: User, method: str | None, **details) -> None:
    row = _throttle(user)
    row.failures = (row.failures or 0) + 1
    db.session.flush()
    event(user, "failed", method, **details)
    db.commit_now("a wrong second-factor code counts against the account although it fails")


def clear_throttle(user: User) -> None:
    row = db.session.get(MfaThrottle, user.id)
    if row is not None:
        row.failures = 0
        db.session.flush()


def verify_code(user: User, code, purpose: str = "sign-in") -> str:
    """One field on a page: six digits are an authenticator code, anything else a recovery code."""
    text = _normalise(code)
    if text.isdigit() and len(text) == 6:
        return verify(user, totp=text, purpose=purpose)
    return verify(user, recovery_code=text or None, purpose=purpose)


def verify(user: User, totp=None, recovery_code=None, purpose: str = "sign-in") -> str:
    """Check a second factor for `user`; returns the method used ("totp" | "recovery").
    Missing -> AuthenticationRequired(mfa_required); wrong or reused -> 401; too many -> 429.
    The failure counter is flushed so the caller can commit it even though it refuses."""
    if not totp and not recovery_code:
        raise AuthenticationRequired(
            "a second factor is required: send `totp` (the 6-digit code) or `recovery_code`, "
            "or sign in with a passkey (POST /api/auth/passkey)",
            mfa_required=True,
        )
    check_throttle(user)
    if totp:
        row = totp_factor(user)
        step = match_totp(row, totp) if row is not None and row.confirmed_at else None
        if step is None:
            count_failure(user, "totp")
            raise AuthenticationRequired(
                "the authenticator code is wrong, expired or already used", mfa_required=True
            )
        row.last_step = step
        method = "totp"
    else:
        code = _normalise(recovery_code)
        rc = None
        if code:
            rc = db.session.scalar(
                select(RecoveryCode).where(
                    RecoveryCode.user_id == user.id,
                    RecoveryCode.code_hash == hash_code(code),
                    RecoveryCode.used_at.is_(None),
                )
            )
        if rc is None:
            count_failure(user, "recovery")
            raise AuthenticationRequired(
                "the recovery code is wrong or already used", mfa_required=True
            )
        rc.used_at = utcnow()
        method = "recovery"
    clear_throttle(user)
    db.session.flush()
    event(user, "used", method, purpose=purpose)
    return method
