"""SSH-layer failures, as domain exceptions from `portal.errors`.

Every message here is safe to show to a user: it names hosts, ports, users and
public fingerprints, never a password, a private key or a passphrase.
"""

from __future__ import annotations

from portal.errors import (
    CommandTimeout,
    HostKeyError,
    MachineUnreachable,
    PortalError,
    ValidationError,
)

__all__ = [
    "AuthenticationFailed",
    "CommandTimeout",
    "HostKeyError",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "InvalidHostKey",
    "InvalidPrivateKey",
    "MachineUnreachable",
    "PassphraseRequired",
    "PoolExhausted",
    "TargetNotAllowed",
    "WrongPassphrase",
]


def hostport(host: str, port: int) -> str:
    """`host:port`, with brackets around IPv6 literals (`[::1]:22`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class InvalidPrivateKey(ValidationError):
    """Not a valid private key (expected an ed25519, RSA or ECDSA key in OpenSSH or PEM format)."""

    code = "invalid_private_key"

    def __init__(self, message: str | None = None, **extra):
        extra.setdefault("field", "private_key")
        super().__init__(message, **extra)


class WrongPassphrase(ValidationError):
    """The passphrase does not decrypt the private key."""

    code = "wrong_passphrase"

    def __init__(self, message: str | None = None, **extra):
        extra.setdefault("field", "passphrase")
        super().__init__(message, **extra)


class PassphraseRequired(WrongPassphrase):
    """The private key is encrypted: a passphrase is required."""

    code = "passphrase_required"


class InvalidHostKey(ValidationError):
    """Not a valid SSH host key line (expected e.g. "ssh-ed25519 AAAA...")."""

    code = "invalid_host_key"

    def __init__(self, message: str | None = None, **extra):
        extra.setdefault("field", "host_key")
        super().__init__(message, **extra)


class HostKeyUnknown(HostKeyError):
    """The machine presented a host key that nobody has trusted yet."""

    code = "host_key_unknown"

    def __init__(self, host: str, port: int, key_line: str, fingerprint: str):
        super().__init__(
            f"host key for {hostport(host, port)} is not trusted yet: {fingerprint} "
            f"({key_line.split()[0]}) — verify this fingerprint and trust the key first",
            host=host,
            port=port,
            key_line=key_line,
            fingerprint=fingerprint,
        )
        self.host = host
        self.port = port
        self.key_line = key_line
        self.fingerprint = fingerprint


class HostKeyMismatch(HostKeyError):
    """The machine presented a host key that differs from the pinned one."""

    code = "host_key_mismatch"

    def __init__(
        self,
        host: str,
        port: int,
        expected: list[str] | tuple[str, ...],
        presented_line: str,
        presented: str,
    ):
        expected = list(expected)
        super().__init__(
            f"host key for {hostport(host, port)} changed: expected {' or '.join(expected)}, "
            f"got {presented} — if this change is expected, an admin of the machine can "
            "re-trust it",
            host=host,
            port=port,
            expected=expected,
            presented=presented,
            key_line=presented_line,
        )
        self.host = host
        self.port = port
        self.expected = expected
        self.presented = presented
        self.key_line = presented_line


class AuthenticationFailed(MachineUnreachable):
    """SSH authentication failed."""

    code = "auth_failed"

    def __init__(self, username: str, host: str, port: int = 22, detail: str | None = None):
        message = f"SSH authentication failed for {username}@{host}"
        if detail:
            message += f" ({detail})"
        super().__init__(message, host=host, port=port, username=username)


class TargetNotAllowed(ValidationError):
    """The address is one the portal may not connect to (link-local, cloud metadata, outside
    PORTAL_ALLOWED_TARGETS or inside PORTAL_DENIED_TARGETS): bad input, 400."""

    code = "target_not_allowed"


class PoolExhausted(PortalError):
    """Too many SSH connections are open; try again in a moment."""

    status = 503
    code = "busy"
