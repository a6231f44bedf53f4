"""The janitor: one thread per app that looks after this process's live terminals each second.

It closes sessions past their grace period (detached) or idle timeout, logs command lines
whose echo never came, writes the byte counters every 5 s, prunes recordings past their
retention every hour, sends the bus heartbeat (Redis), subscribes to the bus again when
Redis was down, and closes the sessions of terminal servers that are gone ("server lost").
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import bindparam, select, update

from portal import metrics
from portal.db import utcnow
from portal.extensions import db
from portal.terminal import recordings
from portal.terminal.models import LIVE, TerminalSession
from portal.terminal.writer import end_row

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0  # seconds between recording-retention sweeps
FLUSH_EVERY = 5.0  # seconds between byte-counter writes
BEAT_EVERY = 10.0  # seconds between bus heartbeats at most (the key lives PORTAL_SERVER_LEASE)
LOST_REASON = "server lost"


class Janitor:
    def __init__(self, registry):
        self.registry = registry
        self._stop = threading.Event()
        self.unseen: dict[str, float] = {}  # server id -> when it was first found gone

    def start(self) -> None:
        threading.Thread(target=self._run, name="terminal-janitor", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        reg = self.registry
        last_flush = last_beat = last_sweep = 0.0
        beat_every = min(BEAT_EVERY, reg.lease / 3)
        last_prune = time.monotonic()  # pruned at start-up (portal.terminal._on_start)
        due = time.monotonic() + 1.0
        while not self._stop.wait(1.0):
            now = time.monotonic()
            metrics.JOB_LAG.observe(max(0.0, now - due))
            if not reg.subscribed:
                reg.subscribe()
            live = reg.live()
            for s in live:
                try:
                    if s.status == "detached" and s.detached_at is not None:
                        if now - s.detached_at >= reg.grace:
                            s.close(f"the browser did not reconnect within {reg.grace} s")
                            continue
                    if reg.idle_timeout and now - s.last_activity >= reg.idle_timeout:
                        s.close(f"idle for more than {reg.idle_timeout} s")
                        continue
                    s.settle_lines()
                    s.expire_watchers(now)
                except Exception:
                    log.exception("terminal janitor failed on %s", s.sid)
            if now - last_flush >= FLUSH_EVERY:
                last_flush = now
                changed = [s for s in live if (s.bytes_in, s.bytes_out) != s.flushed]
                if changed:
                    reg.submit(flush_counters, changed)
            if now - last_prune >= PRUNE_EVERY:  # retention holds in a long-running process
                last_prune = now
                reg.submit(prune)
            if reg.bus.kind == "redis" and now - last_beat >= beat_every:
                last_beat = now
                try:
                    reg.bus.heartbeat(reg.server_id, reg.lease)
                except Exception:
                    log.warning("terminal bus heartbeat failed", exc_info=True)
            if now - last_sweep >= beat_every:
                last_sweep = now
                reg.submit(close_lost, reg, self.unseen)
            due = time.monotonic() + 1.0  # the next tick: 1 s after this one's work ended


def prune() -> None:
    n = recordings.prune_recordings()
    if n:
        log.info("pruned %d recording(s) past the retention period", n)


def flush_counters(sessions) -> None:
    """One executemany UPDATE for every session whose counters moved (with 500 busy
    terminals, loading each row through the ORM every 5 s took ~1/6 of the process's
    Python time under load)."""
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


def close_lost(reg, unseen: dict[str, float]) -> None:
    """Close the live rows of terminal servers that are gone: a process of this host that no
    longer runs, or (Redis) another host whose heartbeat has been missing for a whole lease.
    A server is declared lost only after `reg.lease` seconds unseen, so a Redis restart (the
    heartbeat keys gone until the next beat) or one failed look-up closes nothing."""
    # The other servers first (a few ids), rows only for those found gone: with two workers
    # each one's sweep loaded the other's hundreds of live rows through the ORM every 10 s.
    live_elsewhere = (
        TerminalSession.status.in_(LIVE),
        TerminalSession.server_id.is_not(None),
        TerminalSession.server_id != reg.server_id,
    )
    servers = db.session.scalars(
        select(TerminalSession.server_id).where(*live_elsewhere).distinct()
    ).all()
    now = time.monotonic()
    lost = []
    for sid in servers:
        try:
            running = reg.server_running(sid)
        except Exception:  # Redis down: nothing can be told
            log.warning("terminal janitor: could not tell whether %s runs", sid)
            running = True
        if running is False:
            first = unseen.setdefault(sid, now)
            if now - first >= reg.lease:
                lost.append(sid)
        else:
            unseen.pop(sid, None)
    for sid in [s for s in unseen if s not in servers]:
        unseen.pop(sid, None)
    if not lost:
        return
    rows = db.session.scalars(
        select(TerminalSession).where(*live_elsewhere, TerminalSession.server_id.in_(lost))
    ).all()
    for row in rows:
        log.warning("terminal session %s: its server %s is gone; closed", row.id, row.server_id)
        end_row(row, LOST_REASON)
    db.session.flush()
