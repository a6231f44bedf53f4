"""Recording an audit event: cheap for the request, never breaking the action.

`record()` only builds a dict (actor, IP, user agent from the request when there is one)
and puts it on an in-process queue; a writer thread inserts the queued events in batches
with its own session, so an event is kept even when the request that caused it fails (a
failed sign-in answers 401 and rolls its own work back). `flush()` writes what is queued
now, in the caller's thread (tests, CLI, shutdown).
"""

from __future__ import annotations

import json
import logging
import queue
import threading

from flask import g, has_request_context, request

from portal.accounts.tokens import API_KEY_PREFIX
from portal.audit.models import AuditEvent
from portal.db import utcnow
from portal.extensions import db

log = logging.getLogger(__name__)

MAX_TEXT = 200
_SECRET_KEYS = ("password", "secret", "token", "key", "code", "passphrase", "otp", "totp")


def _clean(details: dict | None) -> dict:
    """Details never carry a secret: keys that look like one are dropped."""
    out = {}
    for k, v in (details or {}).items():
        name = str(k).lower()
        if any(s in name for s in _SECRET_KEYS) and name not in ("key_prefix", "api_key_prefix"):
            continue
        if isinstance(v, str | int | float | bool) or v is None:
            out[str(k)] = v[:1000] if isinstance(v, str) else v
        else:
            out[str(k)] = json.loads(json.dumps(v, default=str))
    return out


def actor_of(user) -> tuple[int | None, str]:
    """(user id, label): the username, "api key <prefix>" when the request came with the
    user's API key, or "system"."""
    if user is None:
        return None, "system"
    label = user.username
    if has_request_context() and g.get("auth_via") == "token":
        # The prefix of the key this request came with (the user's stored prefix may
        # already name a newer key, when this request regenerated it).
        value = request.headers.get("Authorization", "")[7:].strip()
        if value.startswith(API_KEY_PREFIX):
            label = f"api key {value[: len(API_KEY_PREFIX) + 6]}"
    return user.id, label


class Writer:
    """One per app: the queue and the thread that empties it."""

    def __init__(self, app) -> None:
        self.app = app
        self.queue: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.work = threading.Event()
        self.after_write: list = []  # callables(session, rows) in the same transaction
        self.after_commit: list = []  # one-shot callables once that transaction committed

    def put(self, row: dict) -> None:
        self.queue.put(row)
        if (self.thread is None or not self.thread.is_alive()) and not self.stopping.is_set():
            with self.lock:
                if self.thread is None or not self.thread.is_alive():
                    self.thread = threading.Thread(
                        target=self._run, name="audit-writer", daemon=True
                    )
                    self.thread.start()
        self.work.set()

    def _run(self) -> None:
        # Events are taken off the queue only under the lock, so ids follow the order
        # in which they were recorded, whoever writes them (this thread or flush()).
        while not self.stopping.is_set():
            self.work.wait(timeout=0.5)
            self.work.clear()
            self._write([])

    def _drain(self, rows: list) -> list:
        while len(rows) < 500:
            try:
                rows.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return rows

    def _write(self, rows: list) -> None:
        with self.lock:
            rows = self._drain(rows)
            if not rows:
                return
            with self.app.app_context():
                session = db.new_session()
                try:
                    objs = [AuditEvent(**r) for r in rows]
                    session.add_all(objs)
                    session.flush()
                    for hook in self.after_write:
                        hook(session, objs)
                    session.commit()
                    while self.after_commit:
                        self.after_commit.pop()()
                except Exception:
                    self.after_commit.clear()
                    session.rollback()
                    log.exception("could not write %d audit events", len(rows))
                finally:
                    session.close()

    def flush(self) -> None:
        """Write every queued event now (and wait for a batch the thread is writing)."""
        while not self.queue.empty():
            self._write([])
        with self.lock:  # the writer thread holds it from taking rows until its commit
            pass

    def stop(self) -> None:
        self.stopping.set()
        self.work.set()
        self.flush()
        if self.thread is not None:
            self.thread.join(timeout=5)


def writer(app) -> Writer:
    return app.extensions["portal_audit"]


def record(
    app,
    action: str,
    *,
    actor=None,
    actor_label: str | None = None,
    target_type: str | None = None,
    target_id=None,
    target_name: str | None = None,
    machine_id: int | None = None,
    result: str = "ok",
    details: dict | None = None,
) -> None:
    actor_id, label = actor_of(actor)
    if actor_label:
        label = actor_label
    ip = ua = None
    if has_request_context():
        ip = request.remote_addr
        ua = (request.user_agent.string or "")[:300] or None
    clean = _clean(details)
    name = (target_name or "")[:MAX_TEXT] or None
    row = {
        "at": utcnow(),
        "actor_id": actor_id,
        "actor": label[:120],
        "ip": ip,
        "user_agent": ua,
        "action": action,
        "target_type": target_type,
        "target_id": None if target_id is None else str(target_id)[:64],
        "target_name": name,
        "machine_id": machine_id,
        "result": (result or "ok")[:200],
        "details": clean,
        "search": " ".join(
            [
                label,
                action,
                target_type or "",
                "" if target_id is None else str(target_id),
                name or "",
                json.dumps(clean, ensure_ascii=False, default=str),
            ]
        ).lower(),
    }
    writer(app).put(row)
