"""Secrets at rest: Fernet/MultiFernet over app.config["PORTAL_VAULT_KEY"].

The key setting may be a comma-separated list: the first key encrypts, every key
decrypts, and `flask vault rotate` re-encrypts everything with the first key.
A value that is not a Fernet key (e.g. a passphrase) is turned into one with SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app

from portal.errors import PortalError

_cache: dict[str, MultiFernet] = {}


class VaultError(PortalError):
    """Stored credentials cannot be decrypted (was PORTAL_VAULT_KEY changed without rotation?)."""

    status = 500
    code = "vault"


def _as_fernet(raw: str) -> Fernet:
    try:
        if len(base64.urlsafe_b64decode(raw.encode())) == 32:
            return Fernet(raw.encode())
    except (binascii.Error, ValueError):
        pass
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest()))


def fernet(setting: str | None = None) -> MultiFernet:
    setting = setting if setting is not None else current_app.config["PORTAL_VAULT_KEY"]
    f = _cache.get(setting)
    if f is None:
        keys = [k.strip() for k in str(setting).split(",") if k.strip()]
        if not keys:
            raise VaultError("PORTAL_VAULT_KEY is empty")
        f = _cache[setting] = MultiFernet([_as_fernet(k) for k in keys])
    return f


def encrypt(text: str) -> str:
    return fernet().encrypt(text.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise VaultError() from None


def encrypt_json(obj: dict) -> str:
    return encrypt(json.dumps(obj, separators=(",", ":")))


def decrypt_json(token: str | None) -> dict:
    return json.loads(decrypt(token)) if token else {}


def rotate(token: str) -> str:
    """Re-encrypt a token with the first key (decrypting with any key)."""
    try:
        return fernet().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError):
        raise VaultError() from None
