"""Terminal sessions for both faces and the socket routes: lists, detail, closing, sharing,
tickets, and closing rows whose process is gone (no ghosts).

Who may do what is policy.py; opening a terminal is opening.py; recordings are recordings.py.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time

from flask import current_app
from sqlalchemy import func, select

from portal import signals
from portal.accounts.models import User
from portal.db import iso
from portal.errors import AccessDenied, Conflict, NotFound, PortalError, ValidationError
from portal.extensions import db
from portal.files.services import transfers_between
from portal.machines import access as machine_access
from portal.machines.inventory import get_machine
from portal.machines.models import CommandLog
from portal.terminal import access, policy, recordings
from portal.terminal.models import LIVE, TerminalSession
from portal.terminal.registry import Registry, process_alive
from portal.terminal.writer import end_row

log = logging.getLogger(__name__)

TICKET_TTL = 60


class OwnerUnavailable(PortalError):
    """The process holding this session cannot be reached right now; try again shortly."""

    status = 503
    code = "unavailable"


class TicketsUnavailable(PortalError):
    """Terminal tickets cannot be issued right now; try again shortly."""

    status = 503
    code = "unavailable"


def registry():
    return current_app.extensions["portal_terminal"]


# ---------------------------------------------------------------- serialisation


def byte_counters(row: TerminalSession) -> tuple[int, int]:
    """(typed, received) bytes: this process's live counters for a session it holds, else
    the row's (written every few seconds by the holder, and on close)."""
    if row.status in LIVE:
        reg = current_app.extensions.get("portal_terminal")
        sess = reg.get(row.id) if reg is not None else None
        if sess is not None:
            return sess.bytes_in, sess.bytes_out
    return row.bytes_in or 0, row.bytes_out or 0


def session_dict(row: TerminalSession, machine=None) -> dict:
    machine = machine if machine is not None else access.machine_by_id(row.machine_id)
    bytes_in, bytes_out = byte_counters(row)
    return {
        "id": row.id,
        "machine": {"agent_id": machine.agent_id, "name": machine.name} if machine else None,
        "user": {"id": row.user.id, "username": row.user.username} if row.user else None,
        "status": row.status,
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
        "close_reason": row.close_reason,
        "cols": row.cols,
        "rows": row.rows,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "shared": bool(row.shared),
        "last_activity_at": iso(row.last_activity_at),
    }


def sessions_dicts(rows) -> list[dict]:
    cache: dict[int, object] = {}
    out = []
    for row in rows:
        if row.machine_id not in cache:
            cache[row.machine_id] = access.machine_by_id(row.machine_id)
        out.append(session_dict(row, cache[row.machine_id]))
    return out


def get_session(user, sid: str) -> TerminalSession:
    """Load or 404 (also for sessions the caller may not see)."""
    if not isinstance(sid, str) or len(sid) > 36:
        raise NotFound("no such session")
    row = db.session.get(TerminalSession, sid)
    if row is None or not policy.can_see(user, row):
        raise NotFound("no such session")
    return row


# ---------------------------------------------------------------- lists


def list_live(user) -> list[TerminalSession]:
    rows = db.session.scalars(
        select(TerminalSession)
        .where(TerminalSession.status.in_(LIVE))
        .order_by(TerminalSession.started_at.desc())
    ).all()
    return _visible(user, rows)


def list_for_machine(user, agent_id: str, live_only: bool = False, limit: int = 200):
    machine = get_machine(user, agent_id)
    machine_access.require(user, machine, "view_sessions")
    q = select(TerminalSession).where(TerminalSession.machine_id == machine.id)
    if live_only:
        q = q.where(TerminalSession.status.in_(LIVE))
    rows = db.session.scalars(q.order_by(TerminalSession.started_at.desc()).limit(limit)).all()
    return machine, [r for r in rows if policy.can_see(user, r, machine)]


def _visible(user, rows):
    cache: dict[int, object] = {}
    out = []
    for r in rows:
        if r.machine_id not in cache:
            cache[r.machine_id] = access.machine_by_id(r.machine_id)
        if policy.can_see(user, r, cache[r.machine_id]):
            out.append(r)
    return out


def session_detail(user, row: TerminalSession) -> dict:
    """What its page and `GET /api/sessions/<id>` show; `user` may see the session (the
    caller loaded it through `get_session`). Its file transfers are the ones its user made
    on its machine while it was open (the files drawer beside the terminal)."""
    logs = db.session.scalars(
        select(CommandLog).where(CommandLog.session_id == row.id).order_by(CommandLog.id)
    ).all()
    moved = transfers_between(row.machine_id, row.user_id, row.started_at, row.ended_at)
    return {
        "session": session_dict(row),
        "commands": [log_.to_dict() for log_ in logs],
        "transfers": [t.to_dict() for t in moved],
        "recording_url": recordings.recording_url(row) if policy.can_replay(user, row) else None,
    }


# ---------------------------------------------------------------- actions


def close_session(user, row: TerminalSession, reason: str | None = None) -> None:
    if not policy.can_close(user, row):
        raise AccessDenied("only its user or an admin of the machine can close this session")
    if row.status == "closed":
        return
    signals.send(
        signals.terminal_closed_by,
        session_id=row.id,
        actor=user,
        reason=reason,
        machine_id=row.machine_id,
    )
    if reason is None:
        reason = (
            "closed by its user"
            if row.user_id == user.id
            else f"closed by an administrator ({user.username})"
        )
    reg = registry()
    sess = reg.get(row.id)
    if sess is not None:
        sess.close(reason)
        fut = getattr(sess, "end_future", None)
        if fut is not None:
            try:
                fut.result(timeout=10)
            except Exception:
                log.warning("waiting for session %s to be marked closed failed", row.id)
        db.session.expire(row)
        return
    held = owner_running(reg, row)
    if held and reg.bus.kind == "redis":
        reg.request_close(row.id, reason)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            db.release()  # end the read transaction to see the owner's write
            db.session.expire(row)
            if row.status == "closed":
                return
        if owner_running(reg, row):
            # Its shell may still run there: saying "closed" would be a lie.
            raise OwnerUnavailable(
                "the server holding this session did not answer in time; try again"
            )
    elif held:
        raise OwnerUnavailable(
            "another server process holds this session and cannot be reached from this one"
            " (connect the processes with REDIS_URL)"
        )
    # Nobody holds it (its process is gone): mark it closed here.
    end_row(row, reason)
    db.session.flush()


def owner_running(reg, row: TerminalSession) -> bool | None:
    """Whether the process that holds the session is still running: this process (any app in
    it), another on this host (/proc), another host (its bus heartbeat; None without Redis)."""
    if row.server_id == reg.server_id:
        return Registry.holds_anywhere(row.id)
    return reg.server_running(row.server_id)


def set_shared(user, row: TerminalSession, shared: bool) -> None:
    if not policy.can_share(user, row):
        raise AccessDenied("only the session's user can share it")
    if row.status == "closed" and shared:
        raise Conflict("the session is closed")
    row.shared = bool(shared)
    db.session.flush()
    signals.send(signals.session_shared, session_id=row.id, actor=user, shared=bool(shared))
    sess = registry().get(row.id)
    if sess is not None:
        sess.set_shared(bool(shared))
    elif registry().bus.kind == "redis":
        registry().bus.request({"op": "share", "sid": row.id, "shared": bool(shared)})
    if not shared:
        try:
            registry().bus.publish_end(row.id, "the session is no longer shared")
        except Exception:
            log.exception("terminal bus: unshare notice failed")


def live_elsewhere(user_id: int, server_id: str) -> int:
    """The user's live sessions held by other processes (this one counts its own live)."""
    return db.session.scalar(
        select(func.count())
        .select_from(TerminalSession)
        .where(
            TerminalSession.user_id == user_id,
            TerminalSession.status.in_(LIVE),
            (TerminalSession.server_id != server_id) | TerminalSession.server_id.is_(None),
        )
    )


def live_machine_ids(user_id: int) -> list[int]:
    """Machines the user has live (active or detached) terminal sessions on, any process."""
    return list(
        db.session.scalars(
            select(TerminalSession.machine_id)
            .where(TerminalSession.user_id == user_id, TerminalSession.status.in_(LIVE))
            .distinct()
        )
    )


# ---------------------------------------------------------------- tickets


def _ticket_key(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def issue_ticket(user, agent_id: str) -> dict:
    machine = policy.machine_for_terminal(user, agent_id)
    ticket = secrets.token_urlsafe(32)
    try:
        registry().bus.put_ticket(
            _ticket_key(ticket),
            {"user_id": user.id, "tv": user.token_version, "agent_id": machine.agent_id},
            TICKET_TTL,
        )
    except Exception:  # the store (Redis) is down: a clear 503, never a 500
        log.exception("terminal: storing a ticket failed")
        raise TicketsUnavailable() from None
    return {"ticket": ticket, "expires_in": TICKET_TTL}


def redeem_ticket(ticket: str):
    """(user, agent_id) for a valid unused ticket, else None. Single use."""
    if not ticket or len(ticket) > 128:
        return None
    payload = registry().bus.take_ticket(_ticket_key(ticket))
    if not payload:
        return None
    user = db.session.get(User, payload.get("user_id"))
    if user is None or not user.is_active or user.token_version != payload.get("tv"):
        return None
    return user, payload.get("agent_id")


# ---------------------------------------------------------------- ghosts


def close_ghosts(reason: str = "server restarted", *, other_hosts: bool = False) -> int:
    """Mark sessions whose process is gone as closed (on start; no ghosts stay active).

    A row naming another host is checked against its heartbeat when Redis is there; without
    Redis nothing can tell, and the row is left alone unless `other_hosts` is set. The
    terminal server sets it when its worker starts (portal/gunicorn_conf.py): instances that
    serve terminals share a database only through Redis, so such a row was left by an earlier
    incarnation of this one (a container that came back with a new hostname). Any other app
    start (a `flask` command in a container of its own) leaves those rows alone."""
    reg = current_app.extensions.get("portal_terminal")
    rows = db.session.scalars(select(TerminalSession).where(TerminalSession.status.in_(LIVE))).all()
    n = 0
    for row in rows:
        if reg is not None and (reg.get(row.id) is not None or row.server_id == reg.server_id):
            continue  # this process's own (held, or being opened)
        alive = owner_running(reg, row) if reg is not None else process_alive(row.server_id)
        if alive is None and other_hosts:
            alive = False
        if alive is False:
            end_row(row, reason)
            n += 1
    db.session.flush()
    return n


# ---------------------------------------------------------------- validation


def parse_size(value, default: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return default
    return n if 1 <= n <= 1000 else default


def check_share_body(data: dict) -> bool:
    value = data.get("shared")
    if not isinstance(value, bool):
        raise ValidationError("shared must be true or false", field="shared")
    return value
