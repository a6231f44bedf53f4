"""Forwarding audit events to a webhook: a queue table, a delivery thread, HMAC signatures.

The writer thread (log.py) queues one `audit_deliveries` row per event in the same
transaction that inserts the events, so nothing is lost across a restart. The delivery
thread POSTs due rows (JSON body, header `X-Portal-Signature: sha256=<hex HMAC-SHA256 of the
body with the secret>`), deletes them on a 2xx answer and otherwise retries with exponential
backoff (PORTAL_AUDIT_WEBHOOK_BACKOFF seconds, doubled per attempt, capped at an hour) up to
PORTAL_AUDIT_WEBHOOK_MAX_ATTEMPTS. A row is claimed with a conditional UPDATE of its
`next_at`, so several processes never send the same row at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from portal.audit.models import AuditDelivery, AuditEvent, AuditWebhook
from portal.db import utcnow
from portal.errors import ValidationError
from portal.extensions import db
from portal.machines import vault

log = logging.getLogger(__name__)
LEASE = dt.timedelta(seconds=60)
HEADER = "X-Portal-Signature"


URL_MAX = 500
SECRET_MIN, SECRET_MAX = 16, 200


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_url(url) -> str:
    if not isinstance(url, str) or len(url) > URL_MAX:
        raise ValidationError("the URL is too long", field="url")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("the URL must start with http:// or https://", field="url")
    return url


def configure(session, url, secret) -> None:
    """Set (or with an empty URL, remove) the webhook. The secret stays when left empty."""
    row = session.get(AuditWebhook, 1)
    if not url or not str(url).strip():
        if row is not None:
            session.delete(row)
        session.execute(delete(AuditDelivery))
        session.flush()
        return
    url = check_url(url)
    if secret is not None and not isinstance(secret, str):
        raise ValidationError("the secret must be text", field="secret")
    secret = (secret or "").strip()
    if not secret and row is None:
        raise ValidationError("a secret is required", field="secret")
    if secret and not SECRET_MIN <= len(secret) <= SECRET_MAX:
        raise ValidationError("the secret must be 16 to 200 characters", field="secret")
    if row is None:
        row = AuditWebhook(id=1, url=url, secret_enc=vault.encrypt(secret), enabled=True)
        session.add(row)
    else:
        row.url = url
        if secret:
            row.secret_enc = vault.encrypt(secret)
        row.updated_at = utcnow()
    session.flush()


def info(session) -> dict:
    row = session.get(AuditWebhook, 1)
    queued = session.scalar(select(func.count(AuditDelivery.id))) or 0
    return {"url": row.url if row else None, "queued": queued}


def queue_events(session, events) -> bool:
    """Hook of the writer: queue the events just inserted when a webhook is set."""
    row = session.get(AuditWebhook, 1)
    if row is None or not row.enabled:
        return False
    session.add_all(AuditDelivery(event_id=e.id, attempts=0, next_at=utcnow()) for e in events)
    return True


class Deliverer:
    def __init__(self, app) -> None:
        self.app = app
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def kick(self) -> None:
        if self.stopping.is_set():
            return
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="audit-webhook", daemon=True)
                self.thread.start()
        self.wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def _run(self) -> None:
        waiting_for_db = False
        while not self.stopping.is_set():
            try:
                wait = self.deliver_due()
                if waiting_for_db:
                    log.info("audit webhook deliveries resumed: the database answers")
                waiting_for_db = False
            except SQLAlchemyError as exc:
                # The database is down, or its tables are not made yet (`gunicorn` started
                # before `flask db upgrade`): one line until it answers, not a traceback
                # every few seconds.
                if not waiting_for_db:
                    reason = str(getattr(exc, "orig", None) or type(exc).__name__).splitlines()[0]
                    log.warning(
                        "audit webhook deliveries wait for the database (%s); "
                        "is its schema migrated (`flask db upgrade`)?",
                        reason,
                    )
                waiting_for_db = True
                wait = 5.0
            except Exception:
                log.exception("audit webhook delivery failed")
                wait = 5.0
            self.wake.wait(timeout=wait)
            self.wake.clear()

    def deliver_due(self) -> float:
        """Send every due row once; the seconds until the next one is due (at most 30)."""
        cfg = self.app.config
        base = float(cfg.get("PORTAL_AUDIT_WEBHOOK_BACKOFF", 2.0))
        max_attempts = int(cfg.get("PORTAL_AUDIT_WEBHOOK_MAX_ATTEMPTS", 12))
        timeout = float(cfg.get("PORTAL_AUDIT_WEBHOOK_TIMEOUT", 5.0))
        with self.app.app_context():
            session = db.new_session()
            try:
                hook = session.get(AuditWebhook, 1)
                if hook is None:
                    return 30.0
                secret = vault.decrypt(hook.secret_enc)
                now = utcnow()
                due = list(
                    session.scalars(
                        select(AuditDelivery)
                        .where(AuditDelivery.next_at <= now)
                        .order_by(AuditDelivery.id)
                        .limit(100)
                    )
                )
                session.commit()
                for row in due:
                    if self.stopping.is_set():
                        break
                    claimed = session.execute(
                        update(AuditDelivery)
                        .where(AuditDelivery.id == row.id, AuditDelivery.next_at == row.next_at)
                        .values(next_at=now + LEASE)
                        .execution_options(synchronize_session=False)
                    )
                    session.commit()
                    if claimed.rowcount != 1:
                        continue
                    event = session.get(AuditEvent, row.event_id)
                    error = None
                    if event is not None:
                        error = self._post(hook.url, secret, event.to_dict(), timeout)
                    if error is None:
                        session.execute(delete(AuditDelivery).where(AuditDelivery.id == row.id))
                    elif row.attempts + 1 >= max_attempts:
                        log.warning("audit webhook: event %s dropped: %s", row.event_id, error)
                        session.execute(delete(AuditDelivery).where(AuditDelivery.id == row.id))
                    else:
                        delay = min(base * (2**row.attempts), 3600.0)
                        session.execute(
                            update(AuditDelivery)
                            .where(AuditDelivery.id == row.id)
                            .values(
                                attempts=row.attempts + 1,
                                next_at=utcnow() + dt.timedelta(seconds=delay),
                                last_error=error[:300],
                            )
                        )
                    session.commit()
                nxt = session.scalar(select(func.min(AuditDelivery.next_at)))
                session.commit()
                if nxt is None:
                    return 30.0
                return max(0.01, min(30.0, (nxt - utcnow()).total_seconds()))
            finally:
                session.close()

    @staticmethod
    def _post(url: str, secret: str, event: dict, timeout: float) -> str | None:
        body = json.dumps(event, separators=(",", ":")).encode()
        req = urllib.request.Request(  # noqa: S310 - the admin configured this http(s) URL
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", HEADER: sign(secret, body)},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - admin's URL
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except urllib.error.HTTPError as err:
            return f"HTTP {err.code}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            return str(getattr(err, "reason", err))[:300]
