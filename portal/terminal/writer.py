"""The terminal's database writer: one thread per app runs the live sessions' writes.

Status changes, byte counters and command logs go through it, so no pump or socket thread
ever waits on the database while holding a lock, and a signal handler called inside another
feature's transaction never deadlocks on SQLite. Jobs queued together commit together.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from portal import signals
from portal.db import utcnow
from portal.extensions import db
from portal.terminal.models import TerminalSession

log = logging.getLogger(__name__)

QUEUE_MAX = 20000
BATCH_MAX = 500  # many sessions changing at once: one commit


class Writer:
    """Runs fn(*args) jobs in one thread, inside an app context, committing after them."""

    def __init__(self, app):
        self.app = app
        self._q: queue.Queue = queue.Queue(maxsize=QUEUE_MAX)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="terminal-db", daemon=True)
        self._thread.start()

    def submit(self, fn, *args) -> Future:
        """Queue a job; the future resolves once its batch is committed."""
        fut: Future = Future()
        self._q.put((fn, args, fut))
        return fut

    def run_now(self, fn, *args) -> Future:
        """Run a job in the calling thread (no writer thread: the app is shutting down)."""
        fut: Future = Future()
        self._run_job(fn, args, fut)
        return fut

    def stop(self, timeout: float = 10.0) -> None:
        """Wait for everything queued to be committed, then end the thread."""
        fut = self.submit(lambda: None)
        try:
            fut.result(timeout=timeout)
        except Exception:
            log.warning("terminal: DB writes still pending at shutdown")
        self._q.put(None)

    def _run_job(self, fn, args, fut: Future) -> None:
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

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < BATCH_MAX:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._run_batch(batch)
                    return
                batch.append(nxt)
            self._run_batch(batch)

    def _run_batch(self, batch) -> None:
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


def write_status(sid, status, cols, rows, reason, counters) -> None:
    """A live session's row follows it: status, size, and on its end the reason and counters."""
    row = db.session.get(TerminalSession, sid)
    if row is None or row.status == "closed":
        return
    row.cols, row.rows = cols, rows
    row.last_activity_at = utcnow()
    if counters is not None:
        row.bytes_in, row.bytes_out = counters
    if status == "closed":
        if reason is None:
            # a status write (a resize, a detach) racing the session's end: the end's own
            # write carries the reason; closing the row here would lose it
            return
        end_row(row, reason)
    else:
        row.status = status


def end_row(row: TerminalSession, reason: str) -> None:
    """Mark a session's row closed with its reason (every way a session ends comes here) and
    tell the features that care (`signals.session_closed`)."""
    row.status = "closed"
    row.shared = False  # sharing is live watching: it ends with the session
    row.close_reason = reason[:255]
    row.ended_at = row.ended_at or utcnow()
    signals.send(
        signals.session_closed,
        session_id=row.id,
        user_id=row.user_id,
        machine_id=row.machine_id,
        reason=row.close_reason,
    )
