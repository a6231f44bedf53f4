"""Step-up: a fresh second-factor check before a risky action. The one rule every service
calls (`require`). Freshness belongs to the credential: the browser session's `mfa_at`, or
the JWT's `mfa_at` claim; otherwise the request itself may carry a code (`totp` /
`recovery_code` in a JSON body, `mfa_code` in a form, or the `X-MFA-Code` header), or a passkey
assertion for a "step-up" check (`passkey` in a JSON body, `mfa_passkey` in a form)."""

from __future__ import annotations

import time

from flask import current_app, g, has_request_context, request, session

from portal import signals
from portal.accounts import factors, passkeys, tokens
from portal.accounts.models import User
from portal.errors import AccessDenied, AuthenticationRequired, PortalError


class StepUpRequired(AuthenticationRequired):
    """Confirm it is you: enter a code from your authenticator app (or a recovery code)."""

    code = "step_up_required"


def _bearer() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def credential_mfa_at() -> int | None:
    """When the credential of this request last passed a second factor (Unix time)."""
    token = _bearer() or request.args.get("token")
    if token or request.headers.get("X-API-Key"):
        if token and not token.startswith(tokens.API_KEY_PREFIX):
            return tokens.jwt_mfa_at(token)
        return None  # an API key is long-lived: it carries the fact, not the freshness
    value = session.get("mfa_at")
    return value if isinstance(value, int) else None


def offered_code() -> tuple[str | None, str | None]:
    """(totp, recovery_code) offered with this request, if any."""
    header = request.headers.get("X-MFA-Code")
    if header:
        return (header, None) if header.strip().isdigit() else (None, header)
    if request.is_json:
        data = request.get_json(silent=True)
        if isinstance(data, dict) and (data.get("totp") or data.get("recovery_code")):
            totp, rc = data.get("totp"), data.get("recovery_code")
            return (totp if isinstance(totp, str) else None, rc if isinstance(rc, str) else None)
    form_code = request.form.get("mfa_code") if request.form else None
    if form_code:
        return (form_code, None) if form_code.strip().isdigit() else (None, form_code)
    return None, None


def offered_passkey():
    """A passkey assertion offered with this request (an object), if any."""
    value = None
    if request.is_json:
        data = request.get_json(silent=True)
        if isinstance(data, dict):
            value = data.get("passkey")
    elif request.form:
        value = request.form.get("mfa_passkey")
    try:
        return passkeys.parse_assertion(value)
    except PortalError:
        return None


def require_terminal_rights(user: User) -> None:
    """An API key made without terminal rights may call the API but never open a terminal
    (through `?token=`, `X-API-Key` or a ticket asked for with it)."""
    if not has_request_context() or g.get("ws_via") in ("session", "ticket"):
        return
    key = request.headers.get("X-API-Key") or _bearer() or request.args.get("token") or ""
    if key.startswith(tokens.API_KEY_PREFIX) and not user.api_key_terminal:
        raise AccessDenied("this API key was made without terminal rights")


def mark_fresh() -> None:
    """This browser session passed a second factor just now."""
    session["mfa_at"] = int(time.time())


def applies_to(user: User) -> bool:
    return factors.has_factor(user) or factors.required_for_everyone()


def require(user: User, action: str) -> None:
    """Raise StepUpRequired unless `user` passed a second factor within PORTAL_STEP_UP_MAX_AGE
    seconds on this credential, or offers a valid code with this request."""
    if not has_request_context() or not applies_to(user):
        return
    if g.get("ws_via") == "ticket":
        return  # the ticket was issued through this same check
    max_age = int(current_app.config["PORTAL_STEP_UP_MAX_AGE"])
    fresh = credential_mfa_at()
    if fresh is not None and time.time() - fresh <= max_age:
        return
    if not factors.has_factor(user):
        raise StepUpRequired(
            "this portal requires a second factor: set one up on your profile first",
            step_up_required=True,
        )
    totp, rc = offered_code()
    assertion = offered_passkey() if not totp and not rc else None
    if not totp and not rc and assertion is None:
        raise StepUpRequired(step_up_required=True, action=action)
    try:
        if assertion is not None:
            passkeys.finish_authentication(assertion, "step-up", user)
            method = "passkey"
        else:
            method = factors.verify(user, totp=totp, recovery_code=rc, purpose=f"step-up: {action}")
    except AuthenticationRequired as err:
        signals.send(
            signals.mfa_event,
            user=user,
            action="step_up_failed",
            method="passkey" if assertion is not None else ("recovery" if rc else "totp"),
            actor=user,
            details={"for": action},
        )
        raise StepUpRequired(err.message, step_up_required=True, action=action) from None
    if not _bearer() and not request.headers.get("X-API-Key"):
        mark_fresh()  # the browser stays fresh for the next minutes
    signals.send(
        signals.mfa_event,
        user=user,
        action="step_up_ok",
        method=method,
        actor=user,
        details={"for": action},
    )
