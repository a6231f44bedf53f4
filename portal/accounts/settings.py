"""Portal-wide settings an admin changes at runtime (the settings table): whether signup is open."""

from __future__ import annotations

from flask import current_app

from portal.accounts.models import Setting, User
from portal.errors import AccessDenied
from portal.extensions import db


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
