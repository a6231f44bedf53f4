"""Passkeys (WebAuthn, through py_webauthn): the ceremonies. Register several per account, name
and rename them; check one as a second factor, for step-up, for re-authentication, or alone
for passwordless sign-in (a discoverable credential with user verification). Adding one (with
its step-up) and removing one (with re-authentication) are `mfa.begin_passkey` and
`mfa.remove_passkey`: this module sits below step-up, which checks passkeys through it.

Every ceremony has a challenge stored server-side (`webauthn_challenges`), bound to the browser
session and to what it is for, valid for PORTAL_WEBAUTHN_TIMEOUT seconds and deleted the moment
a response comes back, so it works once. The relying party (RP id and the origins the browser
must report) comes from config, else from PORTAL_BASE_URL, else from the request's own host.
Events go out as `signals.mfa_event` (method "passkey"); services flush, callers commit."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from urllib.parse import urlsplit

from flask import current_app, request, session
from sqlalchemy import delete, select
from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from portal import signals
from portal.accounts import factors
from portal.accounts.models import Passkey, User, WebauthnChallenge
from portal.db import utcnow
from portal.errors import AuthenticationRequired, Conflict, NotFound, ValidationError
from portal.extensions import db

PURPOSES = ("register", "mfa", "login", "step-up", "reauth")
NAME_MAX = 64
MAX_PER_USER = 20
_TRANSPORTS = {t.value for t in AuthenticatorTransport}
_BAD_INPUT = (WebAuthnException, ValueError, TypeError, KeyError, AttributeError)


class PasskeyRefused(AuthenticationRequired):
    """The passkey check failed."""

    code = "passkey_refused"


# ---------------------------------------------------------------- relying party


def relying_party() -> tuple[str, list[str]]:
    """(RP id, accepted origins). Config first, then PORTAL_BASE_URL, then this request."""
    cfg = current_app.config
    base = cfg.get("PORTAL_BASE_URL")
    origins = [o.strip().rstrip("/") for o in (cfg.get("PORTAL_WEBAUTHN_ORIGIN") or "").split(",")]
    origins = [o for o in origins if o]
    if not origins:
        origins = [base.rstrip("/") if base else request.host_url.rstrip("/")]
    rp_id = cfg.get("PORTAL_WEBAUTHN_RP_ID") or urlsplit(origins[0]).hostname or ""
    return rp_id, origins


# ---------------------------------------------------------------- listing, naming


def user_passkeys(user: User) -> list[Passkey]:
    return list(
        db.session.scalars(select(Passkey).where(Passkey.user_id == user.id).order_by(Passkey.id))
    )


def own(user: User, passkey_id) -> Passkey:
    row = db.session.get(Passkey, passkey_id) if isinstance(passkey_id, int) else None
    if row is None or row.user_id != user.id:
        raise NotFound("no such passkey")
    return row


def _clean_name(name, default: str | None = None) -> str:
    if name is None or (isinstance(name, str) and not name.strip() and default):
        name = default
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("give the passkey a name", field="name")
    name = " ".join(name.split())
    if len(name) > NAME_MAX:
        raise ValidationError(f"at most {NAME_MAX} characters", field="name")
    return name


def rename(user: User, passkey_id, name) -> Passkey:
    row = own(user, passkey_id)
    row.name = _clean_name(name)
    db.session.flush()
    return row


def remove_all(user: User) -> None:
    db.session.execute(delete(Passkey).where(Passkey.user_id == user.id))
    db.session.flush()


# ---------------------------------------------------------------- challenges


def _session_key(purpose: str) -> str:
    return f"webauthn_{purpose}"


def _new_challenge(purpose: str, user: User | None, **extra) -> bytes:
    now = utcnow()
    db.session.execute(delete(WebauthnChallenge).where(WebauthnChallenge.expires_at < now))
    challenge = secrets.token_bytes(32)
    cid = secrets.token_urlsafe(32)
    ttl = int(current_app.config["PORTAL_WEBAUTHN_TIMEOUT"])
    db.session.add(
        WebauthnChallenge(
            id=cid,
            challenge=bytes_to_base64url(challenge),
            purpose=purpose,
            user_id=user.id if user else None,
            expires_at=now + dt.timedelta(seconds=ttl),
        )
    )
    db.session.flush()
    session[_session_key(purpose)] = {"id": cid, **extra}
    return challenge


def _take_challenge(purpose: str, user: User | None) -> tuple[bytes, dict]:
    """The challenge of this session's pending ceremony for `purpose`, deleted now (and that
    deletion committed: a failed check must not leave it usable)."""
    pending = session.pop(_session_key(purpose), None)
    cid = pending.get("id") if isinstance(pending, dict) else None
    row = db.session.get(WebauthnChallenge, cid) if isinstance(cid, str) else None
    gone = row is None
    if row is not None:
        challenge, expires_at, owner_id = row.challenge, row.expires_at, row.user_id
        db.session.expunge(row)
        taken = db.session.execute(delete(WebauthnChallenge).where(WebauthnChallenge.id == cid))
        gone = taken.rowcount != 1  # another request took it first
        db.commit_now("a challenge works once, even when the check then fails")
    if gone:
        raise PasskeyRefused(
            "no passkey check is pending (it was used already or never started); start again",
            mfa_required=True,
        )
    if expires_at < utcnow():
        raise PasskeyRefused("the passkey check expired; start again", mfa_required=True)
    if owner_id != (user.id if user else None):
        raise PasskeyRefused("this passkey check was started for someone else", mfa_required=True)
    return base64url_to_bytes(challenge), pending


def _options_dict(options) -> dict:
    return json.loads(options_to_json(options))


# ---------------------------------------------------------------- registration


def registration_options(user: User) -> dict:
    """PublicKeyCredentialCreationOptions (JSON) for a new passkey of `user`. The ceremony
    only: `mfa.begin_passkey` is the service, with the step-up that adding a factor needs."""
    existing = user_passkeys(user)
    if len(existing) >= MAX_PER_USER:
        raise Conflict(f"an account can have at most {MAX_PER_USER} passkeys; remove one first")
    handle = existing[0].user_handle if existing else bytes_to_base64url(secrets.token_bytes(32))
    rp_id, _origins = relying_party()
    challenge = _new_challenge("register", user, handle=handle)
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=current_app.config["PORTAL_WEBAUTHN_RP_NAME"],
        user_name=user.username,
        user_id=base64url_to_bytes(handle),
        user_display_name=user.username,
        challenge=challenge,
        timeout=int(current_app.config["PORTAL_WEBAUTHN_TIMEOUT"]) * 1000,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id)) for p in existing
        ],
    )
    return _options_dict(options)


def finish_registration(user: User, credential, name=None) -> Passkey:
    """Check the browser's attestation against the pending challenge and store the passkey."""
    count = len(user_passkeys(user))
    name = _clean_name(name, default=f"Passkey {count + 1}")
    if not isinstance(credential, dict):
        raise ValidationError("`credential` must be the object the browser returned")
    challenge, pending = _take_challenge("register", user)
    rp_id, origins = relying_party()
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origins,
        )
    except _BAD_INPUT as err:
        raise ValidationError(f"the passkey could not be registered: {err}") from None
    cred_id = bytes_to_base64url(verified.credential_id)
    if db.session.scalar(select(Passkey.id).where(Passkey.credential_id == cred_id)):
        raise Conflict("this passkey is registered already")
    response = credential.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    transports = [t for t in transports if t in _TRANSPORTS] if isinstance(transports, list) else []
    row = Passkey(
        user_id=user.id,
        credential_id=cred_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=",".join(transports),
        user_handle=pending["handle"],
        name=name,
    )
    db.session.add(row)
    db.session.flush()
    factors.event(user, "passkey_added", "passkey", name=name)
    return row


# ---------------------------------------------------------------- authentication


def begin_authentication(purpose: str, user: User | None = None) -> dict:
    """PublicKeyCredentialRequestOptions (JSON). With a user: only their passkeys; without
    (passwordless sign-in): any discoverable passkey, and the user must be verified."""
    if purpose not in PURPOSES or purpose == "register":
        raise ValidationError("`purpose` must be login, mfa, step-up or reauth", field="purpose")
    if (purpose == "login") != (user is None):
        raise ValidationError("this passkey check needs a signed-in account", field="purpose")
    allow = None
    if user is not None:
        rows = user_passkeys(user)
        if not rows:
            raise Conflict("this account has no passkey")
        allow = [
            PublicKeyCredentialDescriptor(
                id=base64url_to_bytes(p.credential_id),
                transports=[AuthenticatorTransport(t) for t in p.transports.split(",") if t]
                or None,
            )
            for p in rows
        ]
    rp_id, _origins = relying_party()
    challenge = _new_challenge(purpose, user)
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=int(current_app.config["PORTAL_WEBAUTHN_TIMEOUT"]) * 1000,
        allow_credentials=allow,
        user_verification=UserVerificationRequirement.REQUIRED
        if purpose == "login"
        else UserVerificationRequirement.PREFERRED,
    )
    return _options_dict(options)


def parse_assertion(value):
    """An assertion as sent in a form field (a JSON string) or a JSON body (an object)."""
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except ValueError:
            raise ValidationError("the passkey answer is not valid JSON") from None
    return value if isinstance(value, dict) and value else None


def finish_authentication(
    credential, purpose: str, user: User | None = None
) -> tuple[User, Passkey]:
    """Check an assertion against the pending challenge for `purpose` (and `user`, unless it
    is a passwordless sign-in, which finds the user from the passkey). Refused: another
    origin or RP id, a reused or expired challenge, a sign count that did not move forward,
    a passkey of someone else. Failures count against the account like a wrong code."""
    if purpose not in PURPOSES or purpose == "register":
        raise ValidationError("`purpose` must be login, mfa, step-up or reauth", field="purpose")
    challenge, _pending = _take_challenge(purpose, user)
    if not isinstance(credential, dict):
        raise ValidationError("`credential` must be the object the browser returned")
    raw_id = credential.get("rawId") or credential.get("id")
    row = None
    if isinstance(raw_id, str) and len(raw_id) <= 1400:
        row = db.session.scalar(select(Passkey).where(Passkey.credential_id == raw_id))
    if row is None or (user is not None and row.user_id != user.id):
        if user is not None:
            _refuse(user, purpose, "not a passkey of this account")
        signals.send(signals.sign_in_failed, login=None, reason="unknown passkey")
        raise PasskeyRefused("this passkey is not registered on this portal", mfa_required=True)
    owner = db.session.get(User, row.user_id)
    if purpose == "login":
        response = credential.get("response")
        handle = response.get("userHandle") if isinstance(response, dict) else None
        if handle != row.user_handle:
            _refuse(owner, purpose, "user handle does not match")
        if not owner.is_active:
            signals.send(signals.sign_in_failed, login=owner.username, reason="account deactivated")
            raise PasskeyRefused("this account is deactivated", mfa_required=True)
    factors.check_throttle(owner)
    rp_id, origins = relying_party()
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origins,
            credential_public_key=row.public_key,
            credential_current_sign_count=row.sign_count,
            require_user_verification=purpose == "login",
        )
    except _BAD_INPUT as err:
        _refuse(owner, purpose, str(err)[:200])
    row.sign_count = verified.new_sign_count
    row.last_used_at = utcnow()
    factors.clear_throttle(owner)
    if purpose == "login":
        owner.last_login_at = utcnow()
        signals.send(signals.signed_in, user=owner, method="passkey")
    db.session.flush()
    signals.send(
        signals.mfa_event,
        user=owner,
        action="used",
        method="passkey",
        actor=owner,
        details={"purpose": purpose, "name": row.name},
    )
    return owner, row


def _refuse(user: User, purpose: str, reason: str):
    factors.count_failure(user, "passkey", purpose=purpose, reason=reason)
    if purpose == "login":
        signals.send(signals.sign_in_failed, login=user.username, reason=f"passkey: {reason}")
    raise PasskeyRefused(f"the passkey was refused: {reason}", mfa_required=True)
