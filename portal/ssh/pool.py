"""A thread-safe pool of authenticated SSH connections (Fabric `Connection`s).

Each is a `PinnedConnection` (connection.py: pinned host keys, the Target's credentials
only); a jump host is `gateway=` another pooled one. Exec and shells are channels on its
transport (`open_channel`, with a timeout); `pool.connection(target).sftp()` gives SFTP.

Sharing rules:
  * connections are keyed by `Target.pool_key` (host, port, user, and a keyed
    hash of credentials, pinned keys and gateway): a change of password or
    pinned key never reuses an old connection;
  * a connection carries at most `max_channels` open channels (OpenSSH's
    default `MaxSessions` is 10); beyond that another connection is opened. If
    the server refuses a channel anyway ("administratively prohibited", its
    `MaxSessions` is lower), the connection is marked full and the channel is
    opened on another connection;
  * a connection with no open channel for `idle_ttl` seconds is closed by a
    reaper thread (which only runs while the pool holds connections); dead
    connections are dropped on the next use, never reopened in place;
  * at most `max_connections` connections in total; when full, idle ones are
    evicted, otherwise callers wait up to the target's connect timeout and get
    `PoolExhausted`;
  * concurrent callers for the same target share one connection attempt, and
    share its failure (one handshake to an unreachable host, not twenty).
"""

from __future__ import annotations

import atexit
import os
import threading
import time

import paramiko

from portal import metrics
from portal.errors import PortalError
from portal.ssh.chansend import open_channels
from portal.ssh.connect import unreachable
from portal.ssh.connection import PinnedConnection, open_connection
from portal.ssh.errors import MachineUnreachable, PoolExhausted
from portal.ssh.pooled import OPEN_FAILURE_REASONS, ConnectionInfo, PooledConnection, clone_failure
from portal.ssh.target import Target

__all__ = ["ConnectionInfo", "ConnectionPool", "get_pool", "set_pool"]


class ConnectionPool:
    """Authenticated SSH connections shared by exec, shells, SFTP and jump-host hops."""

    def __init__(
        self,
        *,
        idle_ttl: float = 60.0,
        max_connections: int = 64,
        max_channels: int = 10,
        keepalive: int = 30,
    ):
        if max_channels < 1 or max_connections < 1:
            raise ValueError("max_channels and max_connections must be >= 1")
        self.idle_ttl = float(idle_ttl)
        self.max_connections = max_connections
        self.max_channels = max_channels
        self.keepalive = keepalive
        self._lock = threading.Lock()
        self._conns: dict[tuple, list[PooledConnection]] = {}
        self._closed = False
        self._reaper: threading.Thread | None = None
        self._wake = threading.Event()
        #: SSH handshakes completed by this pool (a warm exec does not add one).
        self.handshakes = 0

    # ------------------------------------------------------------------ public API

    def open_channel(
        self,
        target: Target,
        kind: str = "session",
        dest_addr: tuple[str, int] | None = None,
        src_addr: tuple[str, int] | None = None,
        timeout: float | None = None,
        window_size: int | None = None,
    ) -> paramiko.Channel:
        """Open a channel on a pooled connection to `target`, connecting if needed.
        `window_size`: the channel's receive window (None: paramiko's default, 2 MiB).

        The channel counts against its connection until it is closed (close it!).
        Raises MachineUnreachable, AuthenticationFailed, HostKeyUnknown,
        HostKeyMismatch or PoolExhausted. `paramiko.ChannelException` is raised
        as is for a refused non-session channel (the gateway hop maps it).
        """
        if not isinstance(target, Target):
            raise TypeError("target must be a portal.ssh.Target")
        open_timeout = timeout if timeout is not None else target.connect_timeout
        deadline = time.monotonic() + target.connect_timeout
        last_error: BaseException | None = None
        for _attempt in range(6):
            conn = self._reserve(target, deadline)
            try:
                transport = self._wait_ready(conn, deadline).transport
                try:
                    return transport.open_channel(
                        kind,
                        dest_addr,
                        src_addr,
                        window_size=window_size,
                        timeout=max(open_timeout, 0.1),
                    )
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    if not transport.is_active():
                        # Dead transport (server restarted, network gone): drop it, reconnect.
                        self._discard(conn)
                        last_error = exc
                        continue
                    if "Timeout" in str(exc):
                        raise unreachable(
                            target.host, target.port, "timed out opening an SSH channel"
                        ) from None
                    if kind != "session":
                        raise
                    # A live connection refused a session: the server allows fewer
                    # sessions per connection than we assumed (MaxSessions). Mark this
                    # connection full at its current count and use another one.
                    # (Non-ChannelException errors here are paramiko losing the
                    # ChannelException to a concurrent open: same meaning.)
                    with self._lock:
                        conn.channel_limit = max(
                            1, min(conn.channel_limit, open_channels(conn.transport))
                        )
                    last_error = exc
            finally:
                with self._lock:
                    conn.reserved -= 1
                    conn.last_busy = time.monotonic()
        reason = OPEN_FAILURE_REASONS.get(getattr(last_error, "code", None), "refused")
        raise unreachable(target.host, target.port, f"could not open an SSH channel ({reason})")

    def open_session(self, target: Target, window_size: int | None = None) -> paramiko.Channel:
        """A new `session` channel (for exec or a shell) on a pooled connection."""
        return self.open_channel(target, "session", window_size=window_size)

    def connection(self, target: Target) -> PinnedConnection:
        """A live pooled Fabric Connection for `target` (connecting if needed), e.g. for
        `sftp()`. Channels opened on it count against it like the pool's own."""
        deadline = time.monotonic() + target.connect_timeout
        conn = self._reserve(target, deadline)
        try:
            return self._wait_ready(conn, deadline)
        finally:
            self._release(conn)

    def connections(self, target: Target | None = None) -> list[ConnectionInfo]:
        """Snapshots of the pooled connections (of one target, or all)."""
        now = time.monotonic()
        with self._lock:
            conns = [
                c
                for key, group in self._conns.items()
                if target is None or key == target.pool_key
                for c in group
                if c.ready.is_set() and c.transport is not None
            ]
            return [
                ConnectionInfo(
                    target=repr(c.target),
                    transport=c.transport,
                    open_channels=open_channels(c.transport),
                    channel_limit=c.channel_limit,
                    idle_seconds=0.0 if c.in_use() else now - c.last_busy,
                    via_gateway=c.target.gateway is not None,
                    connection=c.connection,
                )
                for c in conns
            ]

    def stats(self) -> dict:
        with self._lock:
            conns = [c for group in self._conns.values() for c in group]
            return {
                "connections": len(conns),
                "open_channels": sum(open_channels(c.transport) for c in conns),
                "handshakes": self.handshakes,
                "targets": len(self._conns),
            }

    def discard(self, target: Target) -> int:
        """Close every pooled connection to `target` (open channels on them die too)."""
        with self._lock:
            group = self._conns.pop(target.pool_key, [])
        for c in group:
            c.close()
        return len(group)

    def reap(self) -> int:
        """Close dead connections and those idle for longer than `idle_ttl`. Returns how many."""
        now = time.monotonic()
        doomed: list[PooledConnection] = []
        with self._lock:
            for key in list(self._conns):
                keep = []
                for c in self._conns[key]:
                    if not c.ready.is_set():
                        keep.append(c)
                    elif not c.usable():
                        doomed.append(c)
                    elif c.in_use():
                        c.last_busy = now
                        keep.append(c)
                    elif now - c.last_busy >= self.idle_ttl:
                        doomed.append(c)
                    else:
                        keep.append(c)
                if keep:
                    self._conns[key] = keep
                else:
                    del self._conns[key]
        # Inner (jumped) connections first: their tunnels are channels of the gateway's.
        doomed.sort(key=lambda c: c.target.gateway is None)
        for c in doomed:
            c.close()
        return len(doomed)

    def close_all(self) -> None:
        """Close every connection (and every channel on them) and stop the reaper."""
        with self._lock:
            conns = [c for group in self._conns.values() for c in group]
            self._conns.clear()
            reaper, self._reaper = self._reaper, None
        self._wake.set()
        conns.sort(key=lambda c: c.target.gateway is None)
        for c in conns:
            c.close()
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout=5)
        self._wake.clear()

    def shutdown(self) -> None:
        """close_all(), and refuse further use."""
        self._closed = True
        self.close_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    # ------------------------------------------------------------------ internals

    def _reserve(self, target: Target, deadline: float) -> PooledConnection:
        """Reserve a channel slot on a usable connection, starting a new connection if needed."""
        while True:
            evicted: list[PooledConnection] = []
            create: PooledConnection | None = None
            with self._lock:
                if self._closed:
                    raise PortalError("the SSH connection pool is shut down")
                group = self._conns.setdefault(target.pool_key, [])
                dead = [d for d in group if not d.usable()]
                for d in dead:
                    group.remove(d)
                evicted.extend(dead)
                c = next((x for x in group if x.in_use() < x.channel_limit), None)
                if c is not None:
                    c.reserved += 1
                    c.last_busy = time.monotonic()
                else:
                    total = sum(len(g) for g in self._conns.values())
                    if total >= self.max_connections:
                        victim = self._idle_victim()
                        if victim is not None:
                            self._conns[victim.key].remove(victim)
                            if not self._conns[victim.key]:
                                del self._conns[victim.key]
                            evicted.append(victim)
                            total -= 1
                    if total < self.max_connections:
                        c = create = PooledConnection(target, self.max_channels)
                        c.reserved = 1
                        self._conns.setdefault(target.pool_key, []).append(c)
                        self._ensure_reaper()
                if (
                    not group
                    and target.pool_key in self._conns
                    and not self._conns[target.pool_key]
                ):
                    del self._conns[target.pool_key]
            for victim in evicted:
                victim.close()
            if c is not None:
                if create is not None:
                    self._establish(create)
                return c
            if time.monotonic() >= deadline:
                raise PoolExhausted(
                    f"too many SSH connections are open (limit {self.max_connections}); "
                    "try again in a moment"
                )
            time.sleep(0.05)

    def _idle_victim(self) -> PooledConnection | None:
        idle = [
            c
            for group in self._conns.values()
            for c in group
            if c.ready.is_set() and c.in_use() == 0
        ]
        return min(idle, key=lambda c: c.last_busy) if idle else None

    def _establish(self, conn: PooledConnection) -> None:
        """Connect `conn` (called by the one thread that created it, outside the lock).

        Errors are stored on the connection for the threads waiting on it; the
        creating thread sees them through `_wait_ready` like everyone else.
        """
        target = conn.target
        try:
            connection = self._connect(target)
            transport = connection.transport
            if self.keepalive:
                transport.set_keepalive(self.keepalive)
            metrics.SSH_HANDSHAKES.labels("ok").inc()
            with self._lock:
                conn.connection, conn.transport = connection, transport
                self.handshakes += 1
                if conn.closed:  # close_all() ran while we were connecting
                    connection.close()
                else:
                    metrics.SSH_CONNECTIONS.inc()
        except BaseException as exc:
            metrics.SSH_HANDSHAKES.labels("failed").inc()
            conn.error = exc
            with self._lock:
                group = self._conns.get(conn.key)
                if group and conn in group:
                    group.remove(conn)
                    if not group:
                        del self._conns[conn.key]
        finally:
            conn.ready.set()

    def _connect(self, target: Target) -> PinnedConnection:
        """An open connection to `target`; a gateway hop holds a slot while its tunnel opens."""
        if target.gateway is None:
            return open_connection(target)
        deadline = time.monotonic() + target.gateway.connect_timeout
        for attempt in (1, 2):
            hop = self._reserve(target.gateway, deadline)
            try:
                gateway = self._wait_ready(hop, deadline)
                try:
                    return open_connection(target, gateway=gateway)
                except MachineUnreachable:
                    if attempt == 2 or gateway.is_connected:
                        raise
                    self._discard(hop)
            finally:
                self._release(hop)

    def _release(self, conn: PooledConnection) -> None:
        with self._lock:
            conn.reserved -= 1
            conn.last_busy = time.monotonic()

    def _wait_ready(self, conn: PooledConnection, deadline: float) -> PinnedConnection:
        if not conn.ready.wait(max(deadline - time.monotonic(), 0) + 1.0):
            raise unreachable(conn.target.host, conn.target.port, "timed out")
        if conn.error is not None:
            error = conn.error
            if isinstance(error, PortalError):
                raise clone_failure(error)
            raise unreachable(conn.target.host, conn.target.port, "the connection failed")
        if conn.connection is None or conn.closed:
            raise unreachable(conn.target.host, conn.target.port, "the connection was closed")
        return conn.connection

    def _discard(self, conn: PooledConnection) -> None:
        with self._lock:
            group = self._conns.get(conn.key)
            if group and conn in group:
                group.remove(conn)
                if not group:
                    del self._conns[conn.key]
        conn.close()

    def _ensure_reaper(self) -> None:
        """Start the idle reaper if it is not running (call with the lock held)."""
        if self._reaper is not None and self._reaper.is_alive():
            return
        self._reaper = threading.Thread(target=self._reap_loop, name="ssh-pool-reaper", daemon=True)
        self._reaper.start()

    def _reap_loop(self) -> None:
        interval = max(min(self.idle_ttl / 4, 5.0), 0.05)
        me = threading.current_thread()
        while not self._wake.wait(interval):
            self.reap()
            with self._lock:
                if self._reaper is not me:
                    return
                if not self._conns:
                    self._reaper = None
                    return


_default_pool: ConnectionPool | None = None
_default_lock = threading.Lock()


def get_pool() -> ConnectionPool:
    """The process-wide pool (created on first use, closed at interpreter exit)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = ConnectionPool()
            atexit.register(_default_pool.close_all)
        return _default_pool


def set_pool(pool: ConnectionPool | None) -> ConnectionPool | None:
    """Replace the process-wide pool (e.g. configured from the app's settings); returns the old one."""
    global _default_pool
    with _default_lock:
        old, _default_pool = _default_pool, pool
    if pool is not None:
        atexit.register(pool.close_all)
    return old


def _after_fork_in_child() -> None:
    """A forked child (a worker of a preloaded app, a test's live server) must not use the
    parent's connections: their reader threads stayed in the parent, and two processes
    reading one socket corrupt both. The child starts a fresh pool with the same settings and
    never closes the parent's (closing would tear down the parent's transports)."""
    global _default_pool, _default_lock
    _default_lock = threading.Lock()
    old = _default_pool
    if old is None:
        return
    atexit.unregister(old.close_all)
    _default_pool = ConnectionPool(
        idle_ttl=old.idle_ttl,
        max_connections=old.max_connections,
        max_channels=old.max_channels,
        keepalive=old.keepalive,
    )
    atexit.register(_default_pool.close_all)


os.register_at_fork(after_in_child=_after_fork_in_child)
