"""The record the pool keeps for each connection, and the snapshot it hands out."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paramiko

from portal import metrics
from portal.ssh.chansend import open_channels
from portal.ssh.connection import PinnedConnection
from portal.ssh.target import Target

# SSH_OPEN_ADMINISTRATIVELY_PROHIBITED, SSH_OPEN_CONNECT_FAILED, ... (RFC 4254 5.1)
OPEN_FAILURE_REASONS = {
    1: "administratively prohibited",
    2: "connect failed",
    3: "unknown channel type",
    4: "resource shortage",
}


def clone_failure(exc: BaseException) -> BaseException:
    """A fresh instance of a shared failure, so threads do not share one traceback."""
    new = type(exc).__new__(type(exc), *exc.args)
    new.__dict__.update(exc.__dict__)
    return new


@dataclass(frozen=True)
class ConnectionInfo:
    """A snapshot of one pooled connection, for tests, admin pages and metrics."""

    target: str
    transport: paramiko.Transport | None
    open_channels: int
    channel_limit: int
    idle_seconds: float
    via_gateway: bool
    connection: PinnedConnection | None = None


class PooledConnection:
    """One pooled connection: its state, its reservations and its channel count."""

    __slots__ = (
        "key",
        "target",
        "connection",
        "transport",
        "ready",
        "error",
        "reserved",
        "channel_limit",
        "last_busy",
        "closed",
    )

    def __init__(self, target: Target, channel_limit: int):
        self.key = target.pool_key
        self.target = target
        self.connection: PinnedConnection | None = None
        self.transport: paramiko.Transport | None = None  # the connection's, once open
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.reserved = 0
        self.channel_limit = channel_limit
        self.last_busy = time.monotonic()
        self.closed = False

    def in_use(self) -> int:
        return self.reserved + open_channels(self.transport)

    def usable(self) -> bool:
        """Pending, or connected and alive."""
        if self.closed or self.error is not None:
            return False
        if not self.ready.is_set():
            return True
        return self.transport is not None and self.transport.is_active()

    def close(self) -> None:
        was_open, self.closed = not self.closed, True
        if self.connection is not None:
            if was_open:
                metrics.SSH_CONNECTIONS.dec()
            self.connection.close()
