"""Signing a browser in, in its steps: the first factor passed (password or OAuth) either
signs in or leaves a pending second step in the session; the second factor (a code or a
passkey) or a passkey alone completes it. Both faces use these (the sign-in pages in
views.py and mfa_views.py, the passkey sign-in in mfa_api.py)."""

from __future__ import annotations

import time

from flask import flash, redirect, session, url_for
from flask_login import login_user

from portal.accounts import factors, stepup
from portal.accounts.models import User
from portal.extensions import db
from portal.web import safe_next


def home_url() -> str:
    return url_for("dashboard.index")


PENDING_TTL = 300  # seconds between the password and the second factor


def finish_sign_in(user: User, remember: bool, nxt: str | None, status: int = 303):
    """The first factor passed (password or OAuth): sign in now, or ask for the second one.
    Returns the redirect."""
    if factors.has_factor(user):
        session["mfa_pending"] = {
            "uid": user.id,
            "ver": user.token_version,
            "at": int(time.time()),
            "remember": bool(remember),
            "next": nxt or "",
        }
        return redirect(url_for("accounts.login_mfa"), status)
    login_user(user, remember=remember)
    session.permanent = True
    if factors.needs_enrolment(user):
        flash("This portal requires a second factor: set one up now.", "error")
        return redirect(url_for("accounts.profile_mfa"), status)
    return redirect(safe_next(nxt, home_url()), status)


def complete_mfa_sign_in(user: User, pending: dict) -> str:
    """The second factor passed for a half-signed-in user: sign the browser in. Returns where
    to go next."""
    session.pop("mfa_pending", None)
    login_user(user, remember=pending["remember"])
    session.permanent = True
    stepup.mark_fresh()
    return safe_next(pending["next"], home_url())


def passwordless_sign_in(user: User, nxt: str | None = None) -> str:
    """A passkey alone (discoverable, user verified) signed this browser in."""
    session.pop("mfa_pending", None)
    login_user(user)
    session.permanent = True
    stepup.mark_fresh()
    return safe_next(nxt, home_url())


def pending_user() -> tuple[User | None, dict]:
    pending = session.get("mfa_pending")
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > PENDING_TTL:
        session.pop("mfa_pending", None)
        return None, {}
    user = db.session.get(User, pending.get("uid"))
    if user is None or not user.is_active or user.token_version != pending.get("ver"):
        session.pop("mfa_pending", None)
        return None, {}
    return user, pending
