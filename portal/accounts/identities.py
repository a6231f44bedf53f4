"""OAuth / OIDC identities: link and unlink one to a signed-in user, and the sign-in that finds
the account behind an identity or creates one. Services flush; callers commit."""

from __future__ import annotations

import re

from sqlalchemy import select

from portal import signals
from portal.accounts import membership
from portal.accounts.models import OAuthIdentity, User
from portal.accounts.users import create_user
from portal.db import utcnow
from portal.errors import AccessDenied, AuthenticationRequired, Conflict, NotFound, PortalError
from portal.extensions import db


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


def oauth_sign_in(provider: str, subject: str, email: str | None, *args, **kwargs) -> User:
    """An OAuth sign-in (see _oauth_sign_in), audited as succeeded or failed."""
    try:
        user = _oauth_sign_in(provider, subject, email, *args, **kwargs)
    except PortalError as err:
        signals.send(signals.sign_in_failed, login=email, reason=f"{provider}: {err.message}")
        raise
    signals.send(signals.signed_in, user=user, method=f"oauth:{provider}")
    return user


def _oauth_sign_in(
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
    signals.send(signals.user_created, user=user, actor=None, how=f"oauth:{provider}")
    return user
