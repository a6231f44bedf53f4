"""Configuration from the environment, with defaults that run with no setup at all."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _instance_secret(instance: Path, name: str, make) -> str:
    """Read a secret kept in the instance folder, generating it (mode 0600) on first run."""
    path = instance / name
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        return default


def load_config(instance_path: str) -> dict:
    """Everything the app reads, as a plain mapping. Tests pass overrides on top."""
    instance = Path(instance_path)
    env = os.environ.get

    def fernet_key() -> str:
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()

    redis_url = env("REDIS_URL") or None
    cfg = {
        "SECRET_KEY": env("SECRET_KEY")
        or _instance_secret(instance, "secret_key", lambda: secrets.token_urlsafe(48)),
        "PORTAL_VAULT_KEY": env("PORTAL_VAULT_KEY")
        or _instance_secret(instance, "vault_key", fernet_key),
        "DATABASE_URL": env("DATABASE_URL") or f"sqlite:///{instance / 'portal.db'}",
        "REDIS_URL": redis_url,
        "PORTAL_BASE_URL": (env("PORTAL_BASE_URL") or "").rstrip("/") or None,
        "PORTAL_TRUSTED_PROXIES": _int("PORTAL_TRUSTED_PROXIES", 0),
        # Sign-up after the first (admin) account: closed unless set; admins invite people.
        # An admin's toggle on the Users page (a `settings` row) overrides it at run time.
        "PORTAL_SIGNUP_OPEN": _bool(env("PORTAL_SIGNUP_OPEN"), False),
        "PORTAL_AUTH_RATE_LIMIT": env("PORTAL_AUTH_RATE_LIMIT") or "10 per minute;60 per hour",
        "PORTAL_JWT_TTL": _int("PORTAL_JWT_TTL", 24 * 3600),
        "PORTAL_REFRESH_TTL": _int("PORTAL_REFRESH_TTL", 30 * 24 * 3600),
        "PORTAL_MAX_SESSIONS_PER_USER": _int("PORTAL_MAX_SESSIONS_PER_USER", 10),
        "PORTAL_SESSION_GRACE": _int("PORTAL_SESSION_GRACE", 120),
        "PORTAL_IDLE_TIMEOUT": _int("PORTAL_IDLE_TIMEOUT", 3600),
        "PORTAL_RECORDINGS_DIR": env("PORTAL_RECORDINGS_DIR") or str(instance / "recordings"),
        "PORTAL_RECORDING_RETENTION_DAYS": _int("PORTAL_RECORDING_RETENTION_DAYS", 30),
        "PORTAL_RECORDING_MAX_BYTES": _int("PORTAL_RECORDING_MAX_BYTES", 50 * 1024 * 1024),
        "PORTAL_UPLOADS_DIR": env("PORTAL_UPLOADS_DIR") or str(instance / "uploads"),
        "PORTAL_ALLOWED_TARGETS": env("PORTAL_ALLOWED_TARGETS") or "",
        "PORTAL_SSH_CONNECT_TIMEOUT": _int("PORTAL_SSH_CONNECT_TIMEOUT", 10),
        "PORTAL_TERMINAL_BUS_PREFIX": env("PORTAL_TERMINAL_BUS_PREFIX") or "portal:terminal",
        # OAuth providers: a button appears only for the ones configured here.
        "OAUTH_GITHUB_CLIENT_ID": env("OAUTH_GITHUB_CLIENT_ID"),
        "OAUTH_GITHUB_CLIENT_SECRET": env("OAUTH_GITHUB_CLIENT_SECRET"),
        "OAUTH_GOOGLE_CLIENT_ID": env("OAUTH_GOOGLE_CLIENT_ID"),
        "OAUTH_GOOGLE_CLIENT_SECRET": env("OAUTH_GOOGLE_CLIENT_SECRET"),
        "OAUTH_OIDC_CLIENT_ID": env("OAUTH_OIDC_CLIENT_ID"),
        "OAUTH_OIDC_CLIENT_SECRET": env("OAUTH_OIDC_CLIENT_SECRET"),
        "OAUTH_OIDC_DISCOVERY_URL": env("OAUTH_OIDC_DISCOVERY_URL"),
        "OAUTH_OIDC_NAME": env("OAUTH_OIDC_NAME") or "OpenID Connect",
        # Flask / extensions
        "MAX_CONTENT_LENGTH": 6 * 1024 * 1024,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _bool(
            env("PORTAL_SECURE_COOKIES"), (env("PORTAL_BASE_URL") or "").startswith("https://")
        ),
        "REMEMBER_COOKIE_SECURE": _bool(
            env("PORTAL_SECURE_COOKIES"), (env("PORTAL_BASE_URL") or "").startswith("https://")
        ),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_CHECK_DEFAULT": False,  # checked in one place, see portal.security
        "WTF_CSRF_TIME_LIMIT": None,
        "RATELIMIT_STORAGE_URI": redis_url or "memory://",
        "RATELIMIT_HEADERS_ENABLED": True,
        "SOCK_SERVER_OPTIONS": {"ping_interval": 25, "max_message_size": 1024 * 1024},
    }
    return cfg
