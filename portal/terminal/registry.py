"""The live terminals of this process, and the background work around them.

One Registry per app (app.extensions["portal_terminal"]). Threads, all started
on first use: a janitor (grace period, idle timeout, byte counters, liveness
heartbeat, hourly recording retention) and one DB writer (status changes and
command logs go through it, so no bridge thread ever waits on the database while holding a lock, and a
hook called inside another feature's transaction never deadlocks on SQLite).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import weakref
from concurrent.futures import Future

from portal.db import utcnow
from portal.terminal.bus import make_bus
from portal.terminal.live import cut_socket

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0  # seconds between the janitor's recording-retention sweeps


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
        self.idle_timeout = int(cfg.get("PORTAL_IDLE_TIMEOUT", 0) or 0)
        self.cap = int(cfg.get("PORTAL_MAX_SESSIONS_PER_USER", 0) or 0)
        # Watch sockets each cost threads: caps per user and per session (0 = no cap).
        self.watch_cap_user = int(cfg.get("PORTAL_MAX_WATCHERS_PER_USER", 0) or 0)
        self.watch_cap_session = int(cfg.get("PORTAL_MAX_WATCHERS_PER_SESSION", 0) or 0)
        self.watch_places: dict[tuple[str, object], int] = {}  # ("u", uid) / ("s", sid) -> n
        self.server_id = make_server_id()
        self.bus = make_bus(cfg)
        self.sessions: dict[str, object] = {}
        self.watchers: set = set()  # live watch sockets of this process (ws._WatchQueue)
        self.pending: set[Reservation] = set()  # terminals being opened (see Reservation)
        self.lock = threading.Lock()
        self._db_q: queue.Queue = queue.Queue(maxsize=20000)
        self._threads_started = False
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._shut = False
        self._shut_reason = "the server is shutting down"
        self._subscribed = False

    # ------------------------------------------------------------ threads

    def ensure_started(self) -> None:
        with self._start_lock:
            if self._threads_started or self._shut:
                return
            self._threads_started = True
            threading.Thread(target=self._janitor, name="terminal-janitor", daemon=True).start()
            threading.Thread(target=self._db_worker, name="terminal-db", daemon=True).start()
            self._subscribe()

    def _subscribe(self) -> None:
        """Take close/snapshot requests from the bus. With Redis down this fails: the janitor
        tries again every second (a terminal opened meanwhile still works here)."""
        try:
            self.bus.set_control_handler(self.on_control)
            self._subscribed = True
        except Exception:
            self._subscribed = False
            log.warning("terminal bus: cannot subscribe to requests yet", exc_info=True)

    def submit(self, fn, *args) -> Future:
        """Run fn(*args) in the DB thread inside an app context; it commits after fn."""
        fut: Future = Future()
        if self._shut and not self._threads_started:
            self._run_job(fn, args, fut)
            return fut
        self.ensure_started()
        self._db_q.put((fn, args, fut))
        return fut

    def _run_job(self, fn, args, fut: Future) -> None:
        from portal.extensions import db

        with self.app.app_context():
            try:
                result = fn(*args)
                db.session.commit()
                fut.set_result(result)
            except Exception as exc:
                db.session.rollback()
                log.exception("terminal DB job failed")
                fut.set_exception(exc)
            finally:
                db.session.remove()

    def _db_worker(self) -> None:
        while True:
            item = self._db_q.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < 500:  # many sessions changing at once: one commit
                try:
                    nxt = self._db_q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._run_batch(batch)
                    return
                batch.append(nxt)
            self._run_batch(batch)

    def _run_batch(self, batch) -> None:
        from portal.extensions import db

        if len(batch) == 1:
            fn, args, fut = batch[0]
            self._run_job(fn, args, fut)
            return
        with self.app.app_context():
            try:
                results = [fn(*args) for fn, args, _fut in batch]
                db.session.commit()
            except Exception:
                db.session.rollback()
                results = None
            finally:
                db.session.remove()
        if results is None:  # one job failed: run them one by one
            for fn, args, fut in batch:
                self._run_job(fn, args, fut)
            return
        for (_fn, _args, fut), result in zip(batch, results, strict=True):
            fut.set_result(result)

    def _janitor(self) -> None:
        last_flush = last_beat = 0.0
        last_prune = time.monotonic()  # pruned at start-up (portal.terminal._on_start)
        while not self._stop.wait(1.0):
            now = time.monotonic()
            if not self._subscribed:
                self._subscribe()
            with self.lock:
                live = list(self.sessions.values())
            for s in live:
                try:
                    if s.status == "detached" and s.detached_at is not None:
                        if now - s.detached_at >= self.grace:
                            s.close(
                                f"the browser did not reconnect within {self.grace} s",
                            )
                            continue
                    if self.idle_timeout and now - s.last_activity >= self.idle_timeout:
                        s.close(f"idle for more than {self.idle_timeout} s")
                        continue
                    s.settle_lines()
                except Exception:
                    log.exception("terminal janitor failed on %s", s.sid)
            if now - last_flush >= 5:
                last_flush = now
                changed = [s for s in live if (s.bytes_in, s.bytes_out) != s.flushed]
                if changed:
                    self.submit(self._flush_counters, changed)
            if now - last_prune >= PRUNE_EVERY:  # retention holds in a long-running process
                last_prune = now
                self.submit(self._prune)
            if self.bus.kind == "redis" and now - last_beat >= 10:
                last_beat = now
                try:
                    self.bus.heartbeat(self.server_id, 35)
                except Exception:
                    log.warning("terminal bus heartbeat failed", exc_info=True)

    @staticmethod
    def _prune() -> None:
        from portal.terminal import services

        n = services.prune_recordings()
        if n:
            log.info("pruned %d recording(s) past the retention period", n)

    @staticmethod
    def _flush_counters(sessions) -> None:
        """One executemany UPDATE for every session whose counters moved (with 500 busy
        terminals, loading each row through the ORM every 5 s took ~1/6 of the process's
        Python time under load)."""
        from sqlalchemy import bindparam, update

        from portal.extensions import db
        from portal.terminal.models import TerminalSession

        table = TerminalSession.__table__
        stmt = (
            update(table)
            .where(table.c.id == bindparam("sid"))
            .values(
                bytes_in=bindparam("b_in"),
                bytes_out=bindparam("b_out"),
                last_activity_at=bindparam("at"),
            )
        )
        now = utcnow()
        rows = []
        for s in sessions:
            counters = (s.bytes_in, s.bytes_out)
            rows.append({"sid": s.sid, "b_in": counters[0], "b_out": counters[1], "at": now})
            s.flushed = counters
        db.session.execute(stmt, rows)

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
            if reservation is not None:
                self.pending.discard(reservation)
            why = reservation.cancelled if reservation is not None else None
            if why is None and self._shut:
                why = self._shut_reason
        if self.bus.kind == "redis":
            try:
                self.bus.heartbeat(self.server_id, 35)
            except Exception:
                log.warning("terminal bus heartbeat failed", exc_info=True)
        return why

    def get(self, sid: str):
        with self.lock:
            return self.sessions.get(sid)

    def live(self) -> list:
        with self.lock:
            return list(self.sessions.values())

    def status_changed(self, sess) -> Future:
        return self.submit(
            self._write_status, sess.sid, sess.status, sess.cols, sess.rows, None, None
        )

    def ended(self, sess) -> None:
        with self.lock:
            self.sessions.pop(sess.sid, None)
        sess.flushed = (sess.bytes_in, sess.bytes_out)
        sess.end_future = self.submit(
            self._write_status,
            sess.sid,
            "closed",
            sess.cols,
            sess.rows,
            sess.close_reason,
            (sess.bytes_in, sess.bytes_out),
        )

    @staticmethod
    def _write_status(sid, status, cols, rows, reason, counters) -> None:
        from portal.extensions import db
        from portal.terminal.models import TerminalSession

        row = db.session.get(TerminalSession, sid)
        if row is None or row.status == "closed":
            return
        row.status = status
        row.cols, row.rows = cols, rows
        row.last_activity_at = utcnow()
        if counters is not None:
            row.bytes_in, row.bytes_out = counters
        if status == "closed":
            row.close_reason = (reason or "closed")[:255]
            row.ended_at = utcnow()
            row.shared = False  # sharing is live watching: it ends with the session

    @staticmethod
    def _close_stale_row(sid: str, server_id: str, reason: str) -> None:
        from portal.extensions import db
        from portal.terminal.models import LIVE, TerminalSession

        if Registry.holds_anywhere(sid):
            return
        row = db.session.get(TerminalSession, sid)
        if row is None or row.status not in LIVE or row.server_id != server_id:
            return
        row.status = "closed"
        row.shared = False
        row.close_reason = reason[:255]
        row.ended_at = row.ended_at or utcnow()

    def log_commands(self, sess, lines: list[str]) -> None:
        from portal.terminal import access

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

    def drop_socket(self, sid: str, timeout: float = 5.0) -> bool:
        """Test hook: cut the TCP connection under the session's attached WebSocket (no close
        handshake), leaving the SSH channel alone: what a phone going to sleep or a Wi-Fi
        change does. Waits up to `timeout` s for a socket to be attached; True if one was cut.
        """
        deadline = time.monotonic() + timeout
        while True:
            sess = self.get(sid)
            client = getattr(sess, "client", None) if sess is not None else None
            if client is not None:
                cut_socket(client)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    # ------------------------------------------------------------ watchers

    def take_watch_place(self, user_id: int, sid: str) -> str | None:
        """A place for a watch socket of this process, taken before its upgrade: None when
        taken (give it back with give_watch_place), else why not (a cap is reached)."""
        user_key, sid_key = ("u", user_id), ("s", sid)
        with self.lock:
            places = self.watch_places
            if self.watch_cap_user and places.get(user_key, 0) >= self.watch_cap_user:
                return (
                    f"you already have {self.watch_cap_user} watch sockets open, the most"
                    " allowed; close one first"
                )
            if self.watch_cap_session and places.get(sid_key, 0) >= self.watch_cap_session:
                return (
                    f"this session already has {self.watch_cap_session} watchers, the most"
                    " allowed; try again later"
                )
            places[user_key] = places.get(user_key, 0) + 1
            places[sid_key] = places.get(sid_key, 0) + 1
        return None

    def give_watch_place(self, user_id: int, sid: str) -> None:
        with self.lock:
            for key in (("u", user_id), ("s", sid)):
                n = self.watch_places.get(key, 0) - 1
                if n > 0:
                    self.watch_places[key] = n
                else:
                    self.watch_places.pop(key, None)

    def add_watcher(self, w) -> None:
        """A watch socket of this process: `w` has user_id, machine_id, sid and kick(reason)."""
        self.ensure_started()  # close requests from other processes reach it (Redis)
        with self.lock:
            self.watchers.add(w)

    def remove_watcher(self, w) -> None:
        with self.lock:
            self.watchers.discard(w)

    def watcher_ids(self, sid: str) -> list[int]:
        """User ids watching `sid` from this process."""
        with self.lock:
            return [w.user_id for w in self.watchers if w.sid == sid]

    def close_watchers(self, *, user_id=None, machine_id=None, sid=None, reason: str) -> int:
        """End this process's watch sockets of a user and/or on a machine (or of a session)."""
        with self.lock:
            hit = [
                w
                for w in self.watchers
                if (user_id is None or w.user_id == user_id)
                and (machine_id is None or w.machine_id == machine_id)
                and (sid is None or w.sid == sid)
            ]
        for w in hit:
            w.kick(reason)
        return len(hit)

    def close_matching(self, *, user_id=None, machine_id=None, reason: str) -> int:
        """Close live sessions of a user and/or a machine, and that user's watch sockets (on
        that machine), here and (with Redis) everywhere."""

        def match(s):
            return (user_id is None or s.user_id == user_id) and (
                machine_id is None or s.machine_id == machine_id
            )

        n = self.close_where(match, reason)
        if user_id is not None or machine_id is not None:
            self.close_watchers(user_id=user_id, machine_id=machine_id, reason=reason)
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
            self.close_watchers(user_id=uid, machine_id=mid, reason=reason)
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
        elif op == "relay":  # a re-attach served by another process (signed: relay.py)
            from portal.terminal import relay_owner

            relay_owner.on_request(self, msg)
        elif op == "watching":
            sess = self.get(sid)
            if sess is not None:
                sess.watched()

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
        self._stop.set()
        from portal.terminal import relay

        relay.stop_all(self, reason)  # relayed sockets served here: the page reconnects
        if self._threads_started:
            # Futures resolve after their batch is committed: wait for everything queued.
            fut: Future = Future()
            self._db_q.put((lambda: None, (), fut))
            try:
                fut.result(timeout=10)
            except Exception:
                log.warning("terminal: DB writes still pending at shutdown")
            self._db_q.put(None)
        try:
            self.bus.close()
        except Exception:
            log.exception("closing the terminal bus failed")
