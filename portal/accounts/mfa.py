"""Second factors, managed: enrol an authenticator app (TOTP) and confirm it, add or remove a
passkey, regenerate recovery codes, an admin's reset, and the "required for everyone" setting.
Each checks what it needs itself: a step-up (`stepup.require`) before adding a factor beside
one or an admin's change, the password or a passkey again (`check_reauth`) before removing or
regenerating. Checking a code lives below in `factors`, the WebAuthn ceremonies in `passkeys`.
Every event is sent as `signals.mfa_event`; services flush, callers commit."""

from __future__ import annotations

import secrets

import pyotp
import segno
from sqlalchemy import delete

from portal.accounts import passkeys, settings, stepup
from portal.accounts.factors import (
    check_throttle,
    clear_throttle,
    count_failure,
    drop_orphan_recovery_codes,
    event,
    has_factor,
    has_totp,
    hash_code,
    match_totp,
    passkeys_only,
    totp_factor,
    verify_code,
)
from portal.accounts.models import RecoveryCode, TotpFactor, User
from portal.accounts.users import verify_password
from portal.db import utcnow
from portal.errors import AccessDenied, AuthenticationRequired, Conflict, ValidationError
from portal.extensions import db
from portal.machines import vault

ISSUER = "Web Terminal Portal"
RECOVERY_COUNT = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed from paper


def set_required_for_everyone(actor: User, required: bool) -> None:
    if not actor.is_admin:
        raise AccessDenied("only admins can require a second factor")
    stepup.require(actor, "settings.mfa_required")
    settings.set_setting("mfa_required", "1" if required else "0")


# ---------------------------------------------------------------- enrolment


def begin_totp(user: User) -> dict:
    """A new secret, pending until confirmed with a code. Replaces an unconfirmed one."""
    row = totp_factor(user)
    if row is not None and row.confirmed_at is not None:
        raise Conflict("an authenticator app is already set up; remove it first")
    if passkeys_only(user):
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
    step = match_totp(row, code)
    if step is None:
        count_failure(user, "totp")
        raise ValidationError("that code is not right; check the clock on your phone", field="code")
    row.last_step = step
    row.confirmed_at = utcnow()
    codes = _new_recovery_codes(user)
    clear_throttle(user)
    event(user, "totp_enrolled", "totp")
    return codes


def _new_recovery_codes(user: User) -> list[str]:
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_COUNT):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(12))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
        db.session.add(RecoveryCode(user_id=user.id, code_hash=hash_code(raw)))
    db.session.flush()
    return codes


def check_reauth(user: User, password=None, passkey=None) -> None:
    """The password again, or (`passkey`: an assertion for a "reauth" check) a passkey of
    the account. Wrong -> ValidationError on the `password` field."""
    assertion = passkeys.parse_assertion(passkey)
    if assertion is not None:
        try:
            passkeys.finish_authentication(assertion, "reauth", user)
        except AuthenticationRequired as err:
            raise ValidationError(err.message, field="password") from None
        return
    _check_password(user, password)


def _check_password(user: User, password) -> None:
    if not user.password_hash and has_totp(user):
        # An OAuth-only account has no password: a fresh code from its app stands in for it.
        try:
            verify_code(user, password, purpose="re-authentication")
        except AuthenticationRequired as err:
            raise ValidationError(err.message, field="password") from None
        return
    if not verify_password(user, password):
        event(user, "failed", None, reason="wrong password")
        raise ValidationError("the password is wrong", field="password")


def remove_totp(user: User, password, passkey=None) -> None:
    check_reauth(user, password, passkey)
    row = totp_factor(user)
    if row is None:
        raise Conflict("no authenticator app is set up")
    db.session.delete(row)
    db.session.flush()
    drop_orphan_recovery_codes(user)  # kept while a passkey is left
    event(user, "totp_removed", "totp")


def regenerate_recovery_codes(user: User, password, passkey=None) -> list[str]:
    check_reauth(user, password, passkey)
    if not has_factor(user):
        raise Conflict("set up an authenticator app or a passkey first")
    codes = _new_recovery_codes(user)
    event(user, "recovery_regenerated", "recovery")
    return codes


def reset_factors(actor: User, user: User) -> None:
    """An admin removes every factor of a user (lost phone and lost codes)."""
    if not actor.is_admin:
        raise AccessDenied("only admins can reset a user's second factor")
    stepup.require(actor, "user.mfa_reset")
    row = totp_factor(user)
    if row is not None:
        db.session.delete(row)
    passkeys.remove_all(user)
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    db.session.flush()
    event(user, "factors_reset", None, actor=actor)


# ---------------------------------------------------------------- verification


# ---------------------------------------------------------------- passkeys


def begin_passkey(user: User) -> dict:
    """Options for a new passkey of `user` (the browser's `navigator.credentials.create`).
    Adding a factor to an account that has one is a risky action (a stolen session could
    plant its own): a step-up first."""
    stepup.require(user, "passkey.add")
    return passkeys.registration_options(user)


def remove_passkey(user: User, passkey_id, password=None, passkey=None) -> None:
    """Remove one passkey; needs the password again, or a passkey of the account."""
    row = passkeys.own(user, passkey_id)
    check_reauth(user, password, passkey)
    name = row.name
    db.session.delete(row)
    db.session.flush()
    drop_orphan_recovery_codes(user)
    event(user, "passkey_removed", "passkey", name=name)
