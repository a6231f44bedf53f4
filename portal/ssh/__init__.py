"""The SSH layer: pinned host keys, pooled connections, exec and PTY shells.

Flask-free and database-free: services hand it `Target`s built from a Machine
(decrypted credentials, pinned host key lines) and map its exceptions (all
`portal.errors.PortalError` subclasses) to responses.

    from portal.ssh import Target, parse_private_key, run, open_shell, scan_host_key

    keys = scan_host_key("10.0.0.5", 22)          # trust step: show fingerprints
    target = Target("10.0.0.5", 22, "deploy", pkey=parse_private_key(text),
                    host_keys=[line for line, _fp in keys])
    result = run(target, "uptime", timeout=30)    # ExecResult
    channel = open_shell(target, cols=120, rows=40)
    sftp = get_pool().connection(target).sftp()  # a pooled Fabric Connection

Connections are Fabric `Connection`s (`PinnedConnection`): pinned host keys only, the
Target's credentials only, jump hosts through `gateway=`.
"""

from portal.ssh.connection import PinnedConnection, open_connection
from portal.ssh.errors import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyError,
    HostKeyMismatch,
    HostKeyUnknown,
    InvalidHostKey,
    InvalidPrivateKey,
    MachineUnreachable,
    PassphraseRequired,
    PoolExhausted,
    TargetNotAllowed,
    WrongPassphrase,
)
from portal.ssh.exec import DEFAULT_MAX_OUTPUT, ExecResult, close_channel, run, send_signal
from portal.ssh.hostkeys import scan_host_key
from portal.ssh.keys import (
    fingerprint,
    generate_ed25519,
    key_line,
    parse_host_key_line,
    parse_private_key,
)
from portal.ssh.pool import ConnectionInfo, ConnectionPool, get_pool, set_pool
from portal.ssh.shell import open_shell, resize
from portal.ssh.target import Target

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "AuthenticationFailed",
    "CommandTimeout",
    "ConnectionInfo",
    "ConnectionPool",
    "ExecResult",
    "HostKeyError",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "InvalidHostKey",
    "InvalidPrivateKey",
    "MachineUnreachable",
    "PassphraseRequired",
    "PinnedConnection",
    "PoolExhausted",
    "Target",
    "TargetNotAllowed",
    "WrongPassphrase",
    "close_channel",
    "fingerprint",
    "generate_ed25519",
    "get_pool",
    "key_line",
    "open_connection",
    "open_shell",
    "parse_host_key_line",
    "parse_private_key",
    "resize",
    "run",
    "scan_host_key",
    "send_signal",
    "set_pool",
]
