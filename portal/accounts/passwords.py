"""Passwords: argon2id hashing (cheap only in tests) and the policy a new password must meet
(length, not on the common-passwords list)."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

import argon2.profiles
from argon2 import PasswordHasher
from flask import current_app, has_app_context

from portal.errors import ValidationError

ph = PasswordHasher()  # argon2id with the library's current recommended parameters
# Tests only: with TESTING and PORTAL_ARGON2_PROFILE = "cheapest", argon2's cheapest parameters
# (the suite would spend most of its time hashing). Anything else uses `ph`.
_CHEAPEST = PasswordHasher.from_parameters(argon2.profiles.CHEAPEST)
# Verified against when the user does not exist, so login timing does not reveal accounts.
_DUMMY_HASHES: dict[int, str] = {}


def hasher() -> PasswordHasher:
    cfg = current_app.config if has_app_context() else {}
    if cfg.get("TESTING") and cfg.get("PORTAL_ARGON2_PROFILE") == "cheapest":
        return _CHEAPEST
    return ph


def dummy_hash(h: PasswordHasher) -> str:
    if id(h) not in _DUMMY_HASHES:
        _DUMMY_HASHES[id(h)] = h.hash(secrets.token_urlsafe(16))
    return _DUMMY_HASHES[id(h)]


PASSWORD_MIN, PASSWORD_MAX = 8, 128


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    path = Path(__file__).with_name("common_passwords.txt")
    return frozenset(line.strip().lower() for line in path.read_text().splitlines() if line)


def check_password_strength(password, field: str = "password") -> str:
    if not isinstance(password, str) or password == "":
        raise ValidationError("password is required", field=field)
    if len(password) < PASSWORD_MIN:
        raise ValidationError(f"password must be at least {PASSWORD_MIN} characters", field=field)
    if len(password) > PASSWORD_MAX:
        raise ValidationError(f"password must be at most {PASSWORD_MAX} characters", field=field)
    if password.lower() in _common_passwords():
        raise ValidationError("that password is too common; choose another", field=field)
    return password
