"""Configuration from the environment, with defaults that run with no setup at all."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

SECRET_MIN_BYTES = 32
_KEY_HINT = "; e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
_VAULT_HINT = (
    "; e.g. `python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'`"
)
log = logging.getLogger(__name__)


class ConfigError(RuntimeError):
    """A setting the portal refuses to start with (the message names it)."""


def private_dir(path: str | os.PathLike) -> Path:
    """Make a folder only its owner can enter (0700) if it does not exist yet. An existing one
    is left as the operator made it, with a warning if others can read it."""
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:  # another worker made it first
            pass
    elif path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s can be read by other users; `chmod 700` it", path)
    return path


def check_secret(value, source: str, hint: str = "") -> str:
    """A secret shorter than SECRET_MIN_BYTES stops the start (an empty SECRET_KEY would sign
    every JWT and cookie with '')."""
    size = len(value.encode()) if isinstance(value, str) else len(value or b"")
    if size < SECRET_MIN_BYTES:
        raise ConfigError(
            f"{source} is {'empty' if size == 0 else f'only {size} bytes'}: "
            f"secrets must be at least {SECRET_MIN_BYTES} bytes{hint}"
        )
    return value


def _instance_secret(instance: Path, name: str, make) -> str:
    """Read a secret kept in the instance folder, generating it (mode 0600) on first run.

    Written atomically: the value goes to a temp file in the same folder, which is then
    hard-linked into place. Racing workers never see a half-written file, and one that loses
    the race reads the winner's value instead of replacing it."""
    path = instance / name
    if not path.exists():
        private_dir(instance)
        fd, tmp = tempfile.mkstemp(dir=instance, prefix=f".{name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(make() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another worker wrote it first: use theirs
            except OSError:  # a filesystem without hard links: still never half-written
                if not path.exists():
                    os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path.read_text().strip()


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


def check_vault_key(setting, source: str) -> str:
    """Every comma-separated key of PORTAL_VAULT_KEY (a Fernet key is 44 characters)."""
    keys = [k.strip() for k in str(setting or "").split(",") if k.strip()]
    if not keys:
        check_secret("", source, _VAULT_HINT)
    for n, key in enumerate(keys, 1):
        check_secret(key, source if len(keys) == 1 else f"{source} (key {n})", _VAULT_HINT)
    return setting


def check_secrets(cfg: Mapping) -> None:
    """The values the app will run with, whatever their source (tests pass overrides)."""
    check_secret(cfg.get("SECRET_KEY") or "", "SECRET_KEY", _KEY_HINT)
    check_vault_key(cfg.get("PORTAL_VAULT_KEY"), "PORTAL_VAULT_KEY")


def load_config(instance_path: str, given: Mapping | None = None) -> dict:
    """Everything the app reads, as a plain mapping. Tests pass overrides on top (`given`):
    a secret given there is neither read from the environment nor generated."""
    instance = Path(instance_path)
    env = os.environ.get
    given = given or {}

    def fernet_key() -> str:
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()

    def secret_key() -> str:
        if env("SECRET_KEY"):
            return check_secret(env("SECRET_KEY"), "SECRET_KEY", _KEY_HINT)
        path = instance / "secret_key"
        value = _instance_secret(instance, path.name, lambda: secrets.token_urlsafe(48))
        return check_secret(value, str(path), _KEY_HINT)

    def vault_key() -> str:
        if env("PORTAL_VAULT_KEY"):
            return check_vault_key(env("PORTAL_VAULT_KEY"), "PORTAL_VAULT_KEY")
        path = instance / "vault_key"
        return check_vault_key(_instance_secret(instance, path.name, fernet_key), str(path))

    redis_url = env("REDIS_URL") or None
    cfg = {
        "SECRET_KEY": given["SECRET_KEY"] if "SECRET_KEY" in given else secret_key(),
        "PORTAL_VAULT_KEY": given["PORTAL_VAULT_KEY"]
        if "PORTAL_VAULT_KEY" in given
        else vault_key(),
        "DATABASE_URL": env("DATABASE_URL") or f"sqlite:///{instance / 'portal.db'}",
        "REDIS_URL": redis_url,
        "PORTAL_DB_POOL_TIMEOUT": _int("PORTAL_DB_POOL_TIMEOUT", 10),
        "PORTAL_BASE_URL": (env("PORTAL_BASE_URL") or "").rstrip("/") or None,
        "PORTAL_TRUSTED_PROXIES": _int("PORTAL_TRUSTED_PROXIES", 0),
        # Sign-up after the first (admin) account: closed unless set; admins invite people.
        # An admin's toggle on the Users page (a `settings` row) overrides it at run time.
        "PORTAL_SIGNUP_OPEN": _bool(env("PORTAL_SIGNUP_OPEN"), False),
        "PORTAL_AUTH_RATE_LIMIT": env("PORTAL_AUTH_RATE_LIMIT") or "10 per minute;60 per hour",
        "PORTAL_JWT_TTL": _int("PORTAL_JWT_TTL", 24 * 3600),
        # Second factor: failed codes allowed per account per window (seconds).
        "PORTAL_MFA_MAX_FAILURES": _int("PORTAL_MFA_MAX_FAILURES", 5),
        "PORTAL_MFA_FAILURE_WINDOW": _int("PORTAL_MFA_FAILURE_WINDOW", 300),
        # Step-up: risky actions need a second factor checked within this many seconds.
        "PORTAL_STEP_UP_MAX_AGE": _int("PORTAL_STEP_UP_MAX_AGE", 600),
        # Passkeys (WebAuthn): the relying party id (a domain, never an IP address) and the
        # origin(s) the browser must report (comma-separated). Unset: PORTAL_BASE_URL's, else
        # the request's own host and scheme (see docs/mfa.md).
        "PORTAL_WEBAUTHN_RP_ID": env("PORTAL_WEBAUTHN_RP_ID") or None,
        "PORTAL_WEBAUTHN_ORIGIN": env("PORTAL_WEBAUTHN_ORIGIN") or None,
        "PORTAL_WEBAUTHN_RP_NAME": env("PORTAL_WEBAUTHN_RP_NAME") or "Web Terminal Portal",
        # Seconds a passkey ceremony (its challenge) stays valid.
        "PORTAL_WEBAUTHN_TIMEOUT": _int("PORTAL_WEBAUTHN_TIMEOUT", 300),
        "PORTAL_REFRESH_TTL": _int("PORTAL_REFRESH_TTL", 30 * 24 * 3600),
        "PORTAL_MAX_SESSIONS_PER_USER": _int("PORTAL_MAX_SESSIONS_PER_USER", 10),
        "PORTAL_FILES_MAX_PUT": _int("PORTAL_FILES_MAX_PUT", 256 * 1024 * 1024),
        "PORTAL_FILES_MAX_UPLOAD": _int("PORTAL_FILES_MAX_UPLOAD", 0),
        "PORTAL_FILES_UPLOAD_EXPIRY": _int("PORTAL_FILES_UPLOAD_EXPIRY", 24 * 3600),
        # SFTP sessions one user may hold at once per portal process (transfers, listings,
        # changes); one more is a 429 with Retry-After. 0: no cap.
        "PORTAL_FILES_MAX_CONCURRENT": _int("PORTAL_FILES_MAX_CONCURRENT", 8),
        "PORTAL_MAX_WATCHERS_PER_USER": _int("PORTAL_MAX_WATCHERS_PER_USER", 10),
        "PORTAL_MAX_WATCHERS_PER_SESSION": _int("PORTAL_MAX_WATCHERS_PER_SESSION", 20),
        "PORTAL_SESSION_GRACE": _int("PORTAL_SESSION_GRACE", 120),
        # Seconds another terminal server may go unseen (no heartbeat in Redis, or its process
        # gone on this host) before a live one closes its sessions as "server lost".
        "PORTAL_SERVER_LEASE": _int("PORTAL_SERVER_LEASE", 35),
        "PORTAL_IDLE_TIMEOUT": _int("PORTAL_IDLE_TIMEOUT", 3600),
        "PORTAL_RECORDINGS_DIR": env("PORTAL_RECORDINGS_DIR") or str(instance / "recordings"),
        "PORTAL_RECORDING_RETENTION_DAYS": _int("PORTAL_RECORDING_RETENTION_DAYS", 30),
        "PORTAL_AUDIT_RETENTION_DAYS": _int("PORTAL_AUDIT_RETENTION_DAYS", 365),
        # Audit events also to syslog: udp://host:port, tcp://host:port or /dev/log
        "PORTAL_AUDIT_SYSLOG": env("PORTAL_AUDIT_SYSLOG") or "",
        "PORTAL_AUDIT_SYSLOG_FACILITY": env("PORTAL_AUDIT_SYSLOG_FACILITY") or "authpriv",
        "PORTAL_RECORDING_MAX_BYTES": _int("PORTAL_RECORDING_MAX_BYTES", 50 * 1024 * 1024),
        "PORTAL_UPLOADS_DIR": env("PORTAL_UPLOADS_DIR") or str(instance / "uploads"),
        "PORTAL_ALLOWED_TARGETS": env("PORTAL_ALLOWED_TARGETS") or "",
        "PORTAL_DENIED_TARGETS": env("PORTAL_DENIED_TARGETS") or "",
        "PORTAL_MACHINE_RATE_LIMIT": env("PORTAL_MACHINE_RATE_LIMIT") or "30 per minute",
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
        # Redis down: the limits fall back to per-process memory (still limits, not shared)
        # and a storage error lets the request through rather than answering 500.
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_SWALLOW_ERRORS": True,
        "SOCK_SERVER_OPTIONS": {"ping_interval": 25, "max_message_size": 1024 * 1024},
    }
    return cfg
