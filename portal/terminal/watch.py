"""The read-only watch socket: a session's screen, then its output, from the bus.

Each watch socket holds threads, so its place (per user, per session, in this process) is
taken after authentication and before the upgrade (watchers.py); over a cap the answer is a
plain 429. Access is re-checked every WATCH_RECHECK seconds besides the signals.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque

from flask import g, request

from portal import signals
from portal.accounts.models import User
from portal.errors import PortalError
from portal.extensions import db, sock
from portal.terminal import access, policy, services
from portal.terminal.ws import bp
from portal.terminal.ws_common import (
    CLOSE_NORMAL,
    nodelay,
    plain,
    reader_last,
    refuse,
    send_json,
    wsgi_socket,
)

log = logging.getLogger(__name__)

WATCH_QUEUE_MAX = 2 * 1024 * 1024
WATCH_RECHECK = 10.0  # seconds between a watcher's access re-checks


class WatchQueue:
    """Bounded queue between the bus (never blocked) and one watcher's socket. Registered
    with the registry (user, machine, session), so the access hooks can end it."""

    def __init__(self, nonce: str, user_id: int = 0, machine_id: int = 0, sid: str = ""):
        self.nonce = nonce
        self.user_id = user_id
        self.machine_id = machine_id
        self.sid = sid
        self.cond = threading.Condition()
        self.items: deque = deque()
        self.size = 0
        self.overflow = False
        self.have_screen = False
        self.kicked: str | None = None

    def kick(self, reason: str) -> None:
        with self.cond:
            if self.kicked is None:
                self.kicked = reason
            self.cond.notify()

    def on_message(self, kind: str, nonce: str | None, data: bytes) -> None:
        with self.cond:
            if kind == "s" and nonce != self.nonce:
                return
            if self.size + len(data) > WATCH_QUEUE_MAX:
                self.overflow = True
            else:
                self.items.append((kind, data))
                self.size += len(data)
            self.cond.notify()

    def get(self, timeout: float) -> list:
        with self.cond:
            if not self.items and not self.overflow and self.kicked is None:
                self.cond.wait(timeout)
            items = list(self.items)
            self.items.clear()
            self.size = 0
            return items


@bp.before_request
def take_watch_place():
    """Each watch socket costs threads: its place (per user, per session, in this process) is
    taken after authentication and before the upgrade; over a cap the answer is a plain 429.
    The place is given back when the request ends, however it ends."""
    if request.endpoint != "terminal_ws.watch" or g.get("ws_user") is None:
        return None
    sid = str((request.view_args or {}).get("sid", ""))[:36]
    why = services.registry().watchers.take_place(g.ws_user.id, sid)
    if why:
        return plain(429, why)
    g.ws_watch_place = (g.ws_user.id, sid)
    return None


@bp.teardown_request
def give_watch_place(_exc=None):
    place = g.pop("ws_watch_place", None)
    if place is not None:
        services.registry().watchers.give_place(*place)


@sock.route("/api/terminal/sessions/<sid>/watch/ws", bp=bp)
@reader_last
def watch(ws, sid):
    nodelay(wsgi_socket(request.environ))
    user = g.ws_user
    try:
        row = services.get_session(user, sid)
        if not policy.can_watch(user, row):
            raise PortalError("this session is not shared")
        if row.status == "closed":
            raise PortalError(f"the session has ended ({row.close_reason or 'closed'})")
        machine = access.machine_by_id(row.machine_id)
        if g.ws_ticket_agent is not None and g.ws_ticket_agent != machine.agent_id:
            raise PortalError("this ticket is for another machine")
        uid, tv, machine_id = user.id, user.token_version, row.machine_id
        signals.send(signals.watch_started, session_id=row.id, user=user, machine_id=machine_id)
    except PortalError as err:
        db.session.rollback()
        db.session.remove()
        refuse(ws, err.message)
        return
    db.session.rollback()
    db.session.remove()
    reg = services.registry()
    q = WatchQueue(secrets.token_hex(16), uid, machine_id, sid)
    reg.ensure_started()  # close requests from other processes reach it (Redis)
    reg.watchers.add(q)
    handle = reg.bus.subscribe(sid, q.on_message)
    try:
        reg.bus.request({"op": "snapshot", "sid": sid, "nonce": q.nonce})
        if reg.bus.kind == "local" and reg.get(sid) is None:
            refuse(ws, "the session is not running on this server", CLOSE_NORMAL)
            return
        send_json(ws, {"type": "ready", "session_id": sid, "resumed": False, "watch": True})
        waited = time.monotonic()
        checked = waited
        while ws.connected:
            for kind, data in q.get(0.5):
                if kind == "s":
                    q.have_screen = True
                    ws.send(data)
                elif kind == "o":
                    if q.have_screen or time.monotonic() - waited > 2:
                        ws.send(data)
                elif kind == "r":
                    _send_resize(ws, data)
                elif kind == "e":
                    refuse(ws, data.decode("utf-8", "replace"), CLOSE_NORMAL)
                    return
            if q.kicked is not None:
                refuse(ws, q.kicked, CLOSE_NORMAL)
                return
            if q.overflow:
                refuse(ws, "this watcher fell too far behind; reload to watch again", 1013)
                return
            if time.monotonic() - checked >= WATCH_RECHECK:
                # Belt and braces for the hooks: access is re-checked every few seconds.
                checked = time.monotonic()
                why = _watch_denied(uid, tv, sid)
                if why:
                    refuse(ws, why, CLOSE_NORMAL)
                    return
                # An unshared session publishes only while watched: renew the lease.
                reg.bus.request({"op": "watching", "sid": sid, "nonce": q.nonce})
            # Watchers are read-only: drain and ignore what they send (ping excepted).
            while True:
                try:
                    msg = ws.receive(timeout=0)
                except Exception:
                    return
                if msg is None:
                    break
                if isinstance(msg, str) and '"ping"' in msg[:64]:
                    try:
                        if json.loads(msg).get("type") == "ping":
                            send_json(ws, {"type": "pong"})
                    except (ValueError, AttributeError):
                        pass
                    except RecursionError:
                        log.warning("terminal watch %s: a text frame nested too deeply", sid)
                        refuse(ws, "frame nested too deeply")
                        return
    except Exception:
        return
    finally:
        reg.bus.unsubscribe(handle)
        reg.watchers.remove(q)
        try:  # the owner's count drops now, not when this watcher's lease runs out
            reg.bus.request({"op": "unwatched", "sid": sid, "nonce": q.nonce})
        except Exception:
            log.warning("terminal bus: telling the owner a watcher left failed", exc_info=True)


def _send_resize(ws, data: bytes) -> None:
    try:
        cols, rows = (int(x) for x in data.decode("ascii").split("x", 1))
    except (ValueError, UnicodeDecodeError):
        return
    if 1 <= cols <= 1000 and 1 <= rows <= 1000:
        send_json(ws, {"type": "resize", "cols": cols, "rows": rows})


def _watch_denied(user_id: int, token_version, sid: str) -> str | None:
    """Why this watcher may no longer watch (None: it still may)."""
    try:
        user = db.session.get(User, user_id)
        why = policy.account_denied(user, token_version)
        if why:
            return why
        try:
            row = services.get_session(user, sid)
        except PortalError:
            return "you may no longer watch this session"
        if not policy.can_watch(user, row):
            return "the session is no longer shared"
        return None
    except Exception:
        log.exception("re-checking a watcher failed")
        return None
    finally:
        db.session.rollback()
