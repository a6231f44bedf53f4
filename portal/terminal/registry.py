"""The live terminals of this process: sessions, the ones being opened, and who holds what.

One Registry per app (app.extensions["portal_terminal"]). It closes sessions (one, those a
rule matches, all on shutdown), takes close/share/snapshot requests from the bus, and starts
the app's two threads on first use: the janitor (janitor.py) and the DB writer (writer.py),
through which every database write of a live session goes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future

from portal import metrics
from portal.extensions import db
from portal.terminal import access
from portal.terminal.bus import make_bus
from portal.terminal.janitor import Janitor
from portal.terminal.models import LIVE, TerminalSession
from portal.terminal.watchers import Watchers
from portal.terminal.writer import Writer, end_row, write_status

log = logging.getLogger(__name__)


class Reservation:
    """A terminal being opened (SSH handshake under way) that is not registered yet: it
    counts against the user's cap, and a revocation or shutdown meanwhile cancels it (the
    opener closes the new session instead of serving it)."""

    __slots__ = ("user_id", "machine_id", "cancelled")

    def __init__(self, user_id: int, machine_id: int):
        self.user_id = user_id
        self.machine_id = machine_id
        self.cancelled: str | None = None  # the reason, once cancelled


def _start_time(pid: int | str) -> str | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def server_id_for(pid: int) -> str:
    """The server id of a process of this host: host:pid:start time (a reused pid differs)."""
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '0'}"


def make_server_id() -> str:
    return server_id_for(os.getpid())


def process_alive(server_id: str | None) -> bool | None:
    """True/False for a process on this host, None when the id names another host."""
    if not server_id:
        return False
    try:
        host, pid, start = server_id.rsplit(":", 2)
        pid = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    return _start_time(pid) == start


class Registry:
    _instances: weakref.WeakSet = weakref.WeakSet()  # one per app in this process

    @classmethod
    def holds_anywhere(cls, sid: str) -> bool:
        """True when an app of this process holds the session live (tests run several)."""
        return any(reg.get(sid) is not None for reg in list(cls._instances))

    def __init__(self, app):
        Registry._instances.add(self)
        self.app = app
        cfg = app.config
        self.grace = int(cfg.get("PORTAL_SESSION_GRACE", 120))
        self.lease = max(int(cfg.get("PORTAL_SERVER_LEASE", 35) or 35), 3)
        self.idle_timeout = int(cfg.get("PORTAL_IDLE_TIMEOUT", 0) or 0)
        self.cap = int(cfg.get("PORTAL_MAX_SESSIONS_PER_USER", 0) or 0)
        self.server_id = make_server_id()
        self.bus = make_bus(cfg)
        self.sessions: dict[str, object] = {}
        self.watchers = Watchers(cfg)  # watch sockets of this process
        self.pending: set[Reservation] = set()  # terminals being opened (see Reservation)
        self.lock = threading.Lock()
        self.writer = Writer(app)
        self.janitor = Janitor(self)
        # Bus requests handled elsewhere (op -> fn(registry, msg)) and work to do on shutdown
        # (fn(registry, reason)): the relay registers its own (portal.terminal.register).
        self.control_ops: dict[str, Callable[[Registry, dict], None]] = {}
        self.shutdown_hooks: list[Callable[[Registry, str], None]] = []
        self._threads_started = False
        self._start_lock = threading.Lock()
        self._shut = False
        self._shut_reason = "the server is shutting down"
        self.subscribed = False

    # ------------------------------------------------------------ threads

    def ensure_started(self) -> None:
        with self._start_lock:
            if self._threads_started or self._shut:
                return
            self._threads_started = True
            self.janitor.start()
            self.writer.start()
            self.subscribe()

    def subscribe(self) -> None:
        """Take close/snapshot requests from the bus. With Redis down this fails: the janitor
        tries again every second (a terminal opened meanwhile still works here)."""
        try:
            self.bus.set_control_handler(self.on_control)
            self.subscribed = True
        except Exception:
            self.subscribed = False
            log.warning("terminal bus: cannot subscribe to requests yet", exc_info=True)

    def submit(self, fn, *args) -> Future:
        """Run fn(*args) in the DB writer's thread inside an app context; it commits after fn."""
        if self._shut and not self._threads_started:
            return self.writer.run_now(fn, *args)
        self.ensure_started()
        return self.writer.submit(fn, *args)

    # ------------------------------------------------------------ sessions

    def reserve(self, user_id: int, machine_id: int, elsewhere: int = 0) -> Reservation | None:
        """Hold a place for a terminal about to be opened, or None when the user's cap is
        reached: their live sessions here, the ones being opened here, and `elsewhere` (live
        ones other processes hold) together. Checked and taken under one lock, so two opens
        at once cannot both take the last place."""
        with self.lock:
            if self._shut:  # cancelled from the start: the opener refuses with the reason
                r = Reservation(user_id, machine_id)
                r.cancelled = self._shut_reason
                return r
            if self.cap and self._count_locked(user_id) + elsewhere >= self.cap:
                return None
            r = Reservation(user_id, machine_id)
            self.pending.add(r)
            return r

    def release(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            with self.lock:
                self.pending.discard(reservation)

    def count_here(self, user_id: int) -> int:
        """The user's live sessions in this process, and the ones being opened."""
        with self.lock:
            return self._count_locked(user_id)

    def _count_locked(self, user_id: int) -> int:
        n = sum(1 for s in self.sessions.values() if s.user_id == user_id)
        return n + sum(1 for r in self.pending if r.user_id == user_id)

    def pending_machine_ids(self, user_id: int) -> set[int]:
        """Machines this user has terminals being opened on, in this process."""
        with self.lock:
            return {r.machine_id for r in self.pending if r.user_id == user_id}

    def add(self, sess, reservation: Reservation | None = None) -> str | None:
        """Register a new live session (its reservation ends). Returns why it may not run
        after all (a revocation or shutdown cancelled the reservation meanwhile), else None:
        the caller then closes it with that reason."""
        self.ensure_started()
        with self.lock:
            self.sessions[sess.sid] = sess
            metrics.TERMINALS_LIVE.inc()
            metrics.TERMINALS_OPENED.inc()
            if reservation is not None:
                self.pending.discard(reservation)
            why = reservation.cancelled if reservation is not None else None
            if why is None and self._shut:
                why = self._shut_reason
        if self.bus.kind == "redis":
            try:
                self.bus.heartbeat(self.server_id, self.lease)
            except Exception:
                log.warning("terminal bus heartbeat failed", exc_info=True)
        return why

    def get(self, sid: str):
        with self.lock:
            return self.sessions.get(sid)

    def live(self) -> list:
        with self.lock:
            return list(self.sessions.values())

    def server_running(self, server_id: str | None) -> bool | None:
        """Whether another terminal server runs: on this host (/proc), on another host (its
        bus heartbeat; None without Redis)."""
        alive = process_alive(server_id)
        if alive is None and self.bus.kind == "redis":
            alive = self.bus.alive(server_id)
        return alive

    def status_changed(self, sess) -> Future:
        return self.submit(write_status, sess.sid, sess.status, sess.cols, sess.rows, None, None)

    def ended(self, sess) -> None:
        with self.lock:
            if self.sessions.pop(sess.sid, None) is not None:
                metrics.TERMINALS_LIVE.dec()
        sess.flushed = (sess.bytes_in, sess.bytes_out)
        sess.end_future = self.submit(
            write_status,
            sess.sid,
            "closed",
            sess.cols,
            sess.rows,
            sess.close_reason,
            (sess.bytes_in, sess.bytes_out),
        )

    @staticmethod
    def _close_stale_row(sid: str, server_id: str, reason: str) -> None:
        if Registry.holds_anywhere(sid):
            return
        row = db.session.get(TerminalSession, sid)
        if row is None or row.status not in LIVE or row.server_id != server_id:
            return
        end_row(row, reason)

    def log_commands(self, sess, lines: list[str]) -> None:
        self.submit(access.log_commands, sess.machine_id, sess.user_id, sess.sid, lines)

    # ------------------------------------------------------------ closing

    def close(self, sid: str, reason: str) -> bool:
        """Close a session held by this process. True when it was here."""
        sess = self.get(sid)
        if sess is None:
            return False
        sess.close(reason)
        return True

    def close_where(self, pred, reason: str) -> int:
        """Close the live sessions `pred` matches, and cancel the matching ones being opened
        (the revocation lands while their SSH handshake runs)."""
        n = 0
        with self.lock:
            for r in self.pending:
                if r.cancelled is None and pred(r):
                    r.cancelled = reason
        for s in self.live():
            if pred(s):
                s.close(reason)
                n += 1
        return n

    # ------------------------------------------------------------ revocations and the bus

    def close_matching(self, *, user_id=None, machine_id=None, reason: str) -> int:
        """Close live sessions of a user and/or a machine, and that user's watch sockets (on
        that machine), here and (with Redis) everywhere."""

        def match(s):
            return (user_id is None or s.user_id == user_id) and (
                machine_id is None or s.machine_id == machine_id
            )

        n = self.close_where(match, reason)
        if user_id is not None or machine_id is not None:
            self.watchers.close(user_id=user_id, machine_id=machine_id, reason=reason)
        if self.bus.kind == "redis":
            try:
                self.bus.request(
                    {
                        "op": "close_matching",
                        "user_id": user_id,
                        "machine_id": machine_id,
                        "reason": reason,
                    }
                )
            except Exception:
                log.exception("terminal bus: close request failed")
        return n

    def request_close(self, sid: str, reason: str) -> bool:
        """Close here, or ask the owner through the bus. True if it was closed here."""
        if self.close(sid, reason):
            return True
        if self.bus.kind == "redis":
            self.bus.request({"op": "close", "sid": sid, "reason": reason})
        return False

    def on_control(self, msg: dict) -> None:
        op, sid = msg.get("op"), msg.get("sid")
        if op == "close_matching":
            uid, mid = msg.get("user_id"), msg.get("machine_id")
            if uid is None and mid is None:
                return
            reason = str(msg.get("reason") or "closed")[:200]
            self.close_where(
                lambda s: (
                    (uid is None or s.user_id == uid) and (mid is None or s.machine_id == mid)
                ),
                reason,
            )
            self.watchers.close(user_id=uid, machine_id=mid, reason=reason)
            return
        if not isinstance(sid, str):
            return
        if op == "share":
            sess = self.get(sid)
            if sess is not None:
                sess.set_shared(bool(msg.get("shared")))
        elif op == "close":
            reason = str(msg.get("reason") or "closed")[:200]
            if not self.close(sid, reason):
                # A row naming this process that no session here matches (its end was never
                # written): nobody else can close it, so this process does.
                self.submit(self._close_stale_row, sid, self.server_id, reason)
        elif op == "snapshot":
            sess = self.get(sid)
            nonce = msg.get("nonce")
            if sess is not None and isinstance(nonce, str):
                sess.watched()  # before the snapshot: no output falls between the two
                self.bus.publish_resize(sid, sess.cols, sess.rows)  # the size, then the screen
                self.bus.publish_snapshot(sid, nonce, sess.snapshot())
                sess.watcher_joined(nonce[:64])  # the owner's socket hears the new count
        elif op == "watching":
            sess = self.get(sid)
            nonce = msg.get("nonce")
            if sess is not None:
                sess.watched()
                if isinstance(nonce, str):
                    sess.watcher_joined(nonce[:64])  # renews its place in the count
        elif op == "unwatched":
            sess = self.get(sid)
            nonce = msg.get("nonce")
            if sess is not None and isinstance(nonce, str):
                sess.watcher_left(nonce[:64])
        elif op in self.control_ops:  # e.g. "relay": a re-attach served by another process
            self.control_ops[op](self, msg)

    def shutdown(self, reason: str = "the server is shutting down") -> None:
        if self._shut:
            return
        with self.lock:
            self._shut = True
            self._shut_reason = reason
            for r in self.pending:
                r.cancelled = r.cancelled or reason
        for s in self.live():
            try:
                s.close(reason)
            except Exception:
                log.exception("closing %s on shutdown failed", s.sid)
        self.janitor.stop()
        for hook in self.shutdown_hooks:  # e.g. relayed sockets served here: the page reconnects
            try:
                hook(self, reason)
            except Exception:
                log.exception("terminal: a shutdown hook failed")
        if self._threads_started:
            self.writer.stop(timeout=10)  # every write queued so far is committed
        try:
            self.bus.close()
        except Exception:
            log.exception("closing the terminal bus failed")
