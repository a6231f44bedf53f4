"""Second factor: TOTP (pyotp), single-use recovery codes and passkeys (portal/accounts/
passkeys.py). Enrolment, verification with a per-account failure limit, removal and
regeneration (both need the password, or a passkey, again).
Every event is sent as `signals.mfa_event`; services flush, callers commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

import pyotp
import segno
from flask import current_app
from sqlalchemy import delete, select

from portal import signals
from portal.accounts import settings
from portal.accounts.models import MfaThrottle, RecoveryCode, TotpFactor, User
from portal.db import utcnow
from portal.errors import AuthenticationRequired, Conflict, PortalError, ValidationError
from portal.extensions import db
from portal.machines import vault

ISSUER = "Web Terminal Portal"
RECOVERY_COUNT = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed from paper


class TooManyAttempts(PortalError):
    """Too many wrong codes for this account; wait a few minutes and try again."""

    status = 429
    code = "mfa_rate_limited"


def _event(
    user: User, action: str, method: str | None = None, actor: User | None = None, **details
):
    signals.send(
        signals.mfa_event,
        user=user,
        action=action,
        method=method,
        actor=actor or user,
        details=details,
    )


def _hash(code: str) -> str:
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


def has_factor(user: User) -> bool:
    """An authenticator app or at least one passkey."""
    from portal.accounts import passkeys

    return has_totp(user) or passkeys.has_passkey(user)


def required_for_everyone() -> bool:
    return settings.get_setting("mfa_required", "0") == "1"


def set_required_for_everyone(actor: User, required: bool) -> None:
    from portal.errors import AccessDenied

    if not actor.is_admin:
        raise AccessDenied("only admins can require a second factor")
    from portal.accounts import stepup

    stepup.require(actor, "settings.mfa_required")
    settings.set_setting("mfa_required", "1" if required else "0")


def needs_enrolment(user: User) -> bool:
    return required_for_everyone() and not has_factor(user)


# ---------------------------------------------------------------- enrolment


def begin_totp(user: User) -> dict:
    """A new secret, pending until confirmed with a code. Replaces an unconfirmed one."""
    row = totp_factor(user)
    if row is not None and row.confirmed_at is not None:
        raise Conflict("an authenticator app is already set up; remove it first")
    if passkeys_only(user):
        from portal.accounts import stepup

        stepup.require(user, "totp.add")  # adding a factor beside a passkey: as for a passkey
    secret = pyotp.random_base32()
    if row is None:
        row = TotpFactor(user_id=user.id, secret_enc=vault.encrypt(secret))
        db.session.add(row)
    else:
        row.secret_enc = vault.encrypt(secret)
        row.last_step = None
    db.session.flush()
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return {"secret": secret, "otpauth_uri": uri}


def pending_uri(user: User) -> str | None:
    """The otpauth URI of an enrolment not yet confirmed (shown again while it is pending;
    once confirmed, the secret never leaves the server)."""
    row = totp_factor(user)
    if row is None or row.confirmed_at is not None:
        return None
    secret = vault.decrypt(row.secret_enc)
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def secret_of_uri(uri: str) -> str:
    return pyotp.parse_uri(uri).secret


def qr_svg(uri: str) -> str:
    """The otpauth URI as an inline SVG QR code (made here; no external service)."""
    return segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff")


def confirm_totp(user: User, code) -> list[str]:
    row = totp_factor(user)
    if row is None or row.confirmed_at is not None:
        raise Conflict("no pending authenticator app to confirm; start again")
    check_throttle(user)
    step = _match_totp(row, code)
    if step is None:
        _fail(user, "totp")
        raise ValidationError("that code is not right; check the clock on your phone", field="code")
    row.last_step = step
    row.confirmed_at = utcnow()
    codes = _new_recovery_codes(user)
    clear_throttle(user)
    _event(user, "totp_enrolled", "totp")
    return codes


def _new_recovery_codes(user: User) -> list[str]:
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_COUNT):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(12))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
        db.session.add(RecoveryCode(user_id=user.id, code_hash=_hash(raw)))
    db.session.flush()
    return codes


def recovery_codes_left(user: User) -> int:
    rows = db.session.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    ).all()
    return len(rows)


def passkeys_only(user: User) -> bool:
    return not has_totp(user) and has_factor(user)


def check_reauth(user: User, password=None, passkey=None) -> None:
    """The password again, or (`passkey`: an assertion for a "reauth" check) a passkey of
    the account. Wrong -> ValidationError on the `password` field."""
    from portal.accounts import passkeys as passkey_service

    assertion = passkey_service.parse_assertion(passkey)
    if assertion is not None:
        try:
            passkey_service.finish_authentication(assertion, "reauth", user)
        except AuthenticationRequired as err:
            raise ValidationError(err.message, field="password") from None
        return
    _check_password(user, password)


def drop_orphan_recovery_codes(user: User) -> None:
    """Recovery codes stand in for a factor; with no factor left they go too."""
    if not has_factor(user):
        db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        db.session.flush()


def _check_password(user: User, password) -> None:
    from portal.accounts.users import verify_password

    if not user.password_hash and has_totp(user):
        # An OAuth-only account has no password: a fresh code from its app stands in for it.
        try:
            verify_code(user, password, purpose="re-authentication")
        except AuthenticationRequired as err:
            raise ValidationError(err.message, field="password") from None
        return
    if not verify_password(user, password):
        _event(user, "failed", None, reason="wrong password")
        raise ValidationError("the password is wrong", field="password")


def remove_totp(user: User, password, passkey=None) -> None:
    check_reauth(user, password, passkey)
    row = totp_factor(user)
    if row is None:
        raise Conflict("no authenticator app is set up")
    db.session.delete(row)
    db.session.flush()
    drop_orphan_recovery_codes(user)  # kept while a passkey is left
    _event(user, "totp_removed", "totp")


def regenerate_recovery_codes(user: User, password, passkey=None) -> list[str]:
    check_reauth(user, password, passkey)
    if not has_factor(user):
        raise Conflict("set up an authenticator app or a passkey first")
    codes = _new_recovery_codes(user)
    _event(user, "recovery_regenerated", "recovery")
    return codes


def reset_factors(actor: User, user: User) -> None:
    """An admin removes every factor of a user (lost phone and lost codes)."""
    from portal.errors import AccessDenied

    if not actor.is_admin:
        raise AccessDenied("only admins can reset a user's second factor")
    from portal.accounts import stepup

    stepup.require(actor, "user.mfa_reset")
    from portal.accounts import passkeys

    row = totp_factor(user)
    if row is not None:
        db.session.delete(row)
    passkeys.remove_all(user)
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    db.session.flush()
    _event(user, "factors_reset", None, actor=actor)


# ---------------------------------------------------------------- verification


def _match_totp(row: TotpFactor, code) -> int | None:
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
    _event(user, "failed", method, **details)
    db.commit_now("a wrong second-factor code counts against the account although it fails")


_fail = count_failure


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
        step = _match_totp(row, totp) if row is not None and row.confirmed_at else None
        if step is None:
            _fail(user, "totp")
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
                    RecoveryCode.code_hash == _hash(code),
                    RecoveryCode.used_at.is_(None),
                )
            )
        if rc is None:
            _fail(user, "recovery")
            raise AuthenticationRequired(
                "the recovery code is wrong or already used", mfa_required=True
            )
        rc.used_at = utcnow()
        method = "recovery"
    clear_throttle(user)
    db.session.flush()
    _event(user, "used", method, purpose=purpose)
    return method
