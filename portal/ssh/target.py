"""`Target`: everything needed to reach one account on one machine."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

import paramiko

from portal.errors import ValidationError
from portal.ssh.errors import hostport
from portal.ssh.keys import parse_host_key_line
from portal.ssh.netpolicy import TargetPolicy

__all__ = ["Target"]

# Credentials go into pool keys only through an HMAC with a per-process random key,
# so a pool key (or a log line that shows one) cannot be used to guess a password.
_POOL_KEY_SECRET = secrets.token_bytes(32)


@dataclass(frozen=True, eq=False)
class Target:
    """An SSH destination: host, port, account, credentials, pinned host keys, jump host.

    `host_keys` are the pinned host key lines (`"ssh-ed25519 AAAA..."`, known_hosts
    lines are accepted and normalised). With none pinned, a connection fails with
    `HostKeyUnknown`, which carries the presented key for an explicit trust step.

    `repr()` never shows the password or the private key. Two targets with the same
    host, port, user, credentials, pinned keys and gateway share pooled connections
    (`pool_key`).
    """

    host: str
    port: int = 22
    username: str = ""
    password: str | None = field(default=None, repr=False)
    pkey: paramiko.PKey | None = field(default=None, repr=False)
    host_keys: tuple[str, ...] = ()
    gateway: Target | None = None
    connect_timeout: float = 10.0
    #: What a direct connection may reach (None: any): a netpolicy.TargetPolicy or a tuple of
    #: networks; checked on the resolved address when the socket is opened
    #: (connect.open_socket). A gateway target carries its own.
    allowed: object = None
    # Derived in __post_init__.
    pinned: tuple[paramiko.PKey, ...] = field(default=(), init=False, repr=False)
    pool_key: tuple = field(default=(), init=False, repr=False)

    def __post_init__(self):
        host = (self.host or "").strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if (
            not host
            or any(c.isspace() or c in "@/" for c in host)
            or host.count(":") == 1  # host:port (an IPv6 literal has two or more)
            or len(host) > 253
        ):
            raise ValidationError("invalid host name", field="host")
        try:
            port = int(self.port)
        except (TypeError, ValueError):
            raise ValidationError("the port must be a number", field="port") from None
        if not 1 <= port <= 65535:
            raise ValidationError("the port must be between 1 and 65535", field="port")
        username = self.username or ""
        if not username or any(c.isspace() or c in "@:" for c in username) or len(username) > 64:
            raise ValidationError("invalid user name", field="username")
        if self.pkey is not None and not (
            isinstance(self.pkey, paramiko.PKey) and self.pkey.can_sign()
        ):
            raise ValidationError(
                "pkey must be a private key (see parse_private_key)", field="pkey"
            )
        if self.password is not None and not isinstance(self.password, str):
            raise ValidationError("the password must be text", field="password")
        if self.gateway is not None and not isinstance(self.gateway, Target):
            raise ValidationError("the gateway must be a Target", field="gateway")
        if not self.connect_timeout or self.connect_timeout <= 0:
            raise ValidationError("connect_timeout must be positive", field="connect_timeout")

        lines = (
            (self.host_keys,) if isinstance(self.host_keys, str) else tuple(self.host_keys or ())
        )
        normalised, pinned = [], []
        for line in lines:
            keytype, b64, pkey = parse_host_key_line(line)
            if f"{keytype} {b64}" not in normalised:
                normalised.append(f"{keytype} {b64}")
                pinned.append(pkey)

        secret = hmac.new(_POOL_KEY_SECRET, digestmod=hashlib.sha256)
        secret.update(b"password\0" + (self.password or "").encode("utf-8") + b"\0")
        secret.update(b"pkey\0" + (self.pkey.asbytes() if self.pkey else b"") + b"\0")
        secret.update(b"hostkeys\0" + "\n".join(sorted(normalised)).encode("ascii") + b"\0")
        secret.update(b"gateway\0" + repr(self.gateway.pool_key if self.gateway else None).encode())
        allowed = self.allowed
        if allowed is not None and not isinstance(allowed, TargetPolicy):
            allowed = tuple(allowed)
        secret.update(b"allowed\0" + repr(allowed).encode())

        set_ = object.__setattr__
        set_(self, "host", host)
        set_(self, "port", port)
        set_(self, "username", username)
        set_(self, "host_keys", tuple(normalised))
        set_(self, "connect_timeout", float(self.connect_timeout))
        set_(self, "allowed", allowed)
        set_(self, "pinned", tuple(pinned))
        set_(self, "pool_key", (host, port, username, secret.hexdigest()[:32]))

    def __eq__(self, other):
        return isinstance(other, Target) and self.pool_key == other.pool_key

    def __hash__(self):
        return hash(self.pool_key)

    @property
    def address(self) -> str:
        """`host:port` (IPv6 literals bracketed), for messages."""
        return hostport(self.host, self.port)

    @property
    def auth_method(self) -> str:
        if self.pkey is not None and self.password is not None:
            return "key+password"
        if self.pkey is not None:
            return "key"
        return "password" if self.password is not None else "none"

    def __repr__(self) -> str:
        via = f" via {self.gateway.username}@{self.gateway.address}" if self.gateway else ""
        return (
            f"Target({self.username}@{self.address}{via}, auth={self.auth_method}, "
            f"pinned_keys={len(self.host_keys)})"
        )

    __str__ = __repr__
