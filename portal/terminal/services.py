"""Terminal rules, shared by the JSON API, the pages and the socket routes."""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path

from flask import current_app, url_for
from sqlalchemy import func, select

from portal.db import iso, utcnow
from portal.errors import AccessDenied, Conflict, NotFound, PortalError, ValidationError
from portal.extensions import db
from portal.machines import access as machine_access
from portal.machines.inventory import get_machine
from portal.machines.targets import ssh_target
from portal.ssh.exec import close_channel
from portal.terminal import access
from portal.terminal.models import LIVE, TerminalSession

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


def session_dict(row: TerminalSession, machine=None) -> dict:
    machine = machine if machine is not None else access.machine_by_id(row.machine_id)
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
        "bytes_in": row.bytes_in,
        "bytes_out": row.bytes_out,
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


# ---------------------------------------------------------------- access


def can_see(user, row: TerminalSession, machine=None) -> bool:
    """Its user, global admins and the machine's admins; anyone with a role on the machine
    while it is shared and live (sharing is live watching: it ends with the session)."""
    if user is None:
        return False
    if user.is_admin or row.user_id == user.id:
        return True
    machine = machine if machine is not None else access.machine_by_id(row.machine_id)
    role = machine_access.role_of(user, machine)
    return machine_access.allowed(user, machine, "watch_any", role) or (
        bool(row.shared)
        and row.status in LIVE
        and machine_access.allowed(user, machine, "watch_shared", role)
    )


def can_close(user, row: TerminalSession, machine=None) -> bool:
    if user is None:
        return False
    if user.is_admin or row.user_id == user.id:
        return True
    machine = machine if machine is not None else access.machine_by_id(row.machine_id)
    return machine_access.can(user, machine, "close_any_session")


def can_replay(user, row: TerminalSession, machine=None) -> bool:
    """The recording holds everything the session printed, from before it was shared too:
    its user, global admins and the machine's admins only, never a watcher."""
    return can_close(user, row, machine)


def can_share(user, row: TerminalSession) -> bool:
    return user is not None and row.user_id == user.id


def get_session(user, sid: str) -> TerminalSession:
    """Load or 404 (also for sessions the caller may not see)."""
    if not isinstance(sid, str) or len(sid) > 36:
        raise NotFound("no such session")
    row = db.session.get(TerminalSession, sid)
    if row is None or not can_see(user, row):
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


def list_for_user(user, limit: int = 100) -> list[TerminalSession]:
    """The caller's own sessions (live first, then recent), plus live ones they may see."""
    own = db.session.scalars(
        select(TerminalSession)
        .where(TerminalSession.user_id == user.id)
        .order_by(TerminalSession.started_at.desc())
        .limit(limit)
    ).all()
    seen = {r.id for r in own}
    others = [r for r in list_live(user) if r.id not in seen]
    rows = list(own) + others
    rows.sort(key=lambda r: (r.status == "closed", -r.started_at.timestamp()))
    return rows


def list_for_machine(user, agent_id: str, live_only: bool = False, limit: int = 200):
    machine = get_machine(user, agent_id)
    machine_access.require(user, machine, "view_sessions")
    q = select(TerminalSession).where(TerminalSession.machine_id == machine.id)
    if live_only:
        q = q.where(TerminalSession.status.in_(LIVE))
    rows = db.session.scalars(q.order_by(TerminalSession.started_at.desc()).limit(limit)).all()
    return machine, [r for r in rows if can_see(user, r, machine)]


def _visible(user, rows):
    cache: dict[int, object] = {}
    out = []
    for r in rows:
        if r.machine_id not in cache:
            cache[r.machine_id] = access.machine_by_id(r.machine_id)
        if can_see(user, r, cache[r.machine_id]):
            out.append(r)
    return out


def session_detail(user, row: TerminalSession) -> dict:
    from portal.machines.models import CommandLog

    logs = db.session.scalars(
        select(CommandLog).where(CommandLog.session_id == row.id).order_by(CommandLog.id)
    ).all()
    return {
        "session": session_dict(row),
        "commands": [log_.to_dict() for log_ in logs],
        "recording_url": recording_url(row) if can_replay(user, row) else None,
    }


# ---------------------------------------------------------------- actions


def close_session(user, row: TerminalSession, reason: str | None = None) -> None:
    if not can_close(user, row):
        raise AccessDenied("only its user or an admin of the machine can close this session")
    if row.status == "closed":
        return
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
        import time

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
    row.status = "closed"
    row.shared = False  # sharing is live watching: it ends with the session
    row.close_reason = reason[:255]
    row.ended_at = row.ended_at or utcnow()
    db.session.flush()


def owner_running(reg, row: TerminalSession) -> bool | None:
    """Whether the process that holds the session is still running: this process (any app in
    it), another on this host (/proc), another host (its bus heartbeat; None without Redis)."""
    from portal.terminal.registry import Registry, process_alive

    if row.server_id == reg.server_id:
        return Registry.holds_anywhere(row.id)
    alive = process_alive(row.server_id)
    if alive is None and reg.bus.kind == "redis":
        alive = reg.bus.alive(row.server_id)
    return alive


def set_shared(user, row: TerminalSession, shared: bool) -> None:
    if not can_share(user, row):
        raise AccessDenied("only the session's user can share it")
    if row.status == "closed" and shared:
        raise Conflict("the session is closed")
    row.shared = bool(shared)
    db.session.flush()
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
    machine = machine_for_terminal(user, agent_id)
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
    from portal.accounts.models import User

    if not ticket or len(ticket) > 128:
        return None
    payload = registry().bus.take_ticket(_ticket_key(ticket))
    if not payload:
        return None
    user = db.session.get(User, payload.get("user_id"))
    if user is None or not user.is_active or user.token_version != payload.get("tv"):
        return None
    return user, payload.get("agent_id")


# ---------------------------------------------------------------- recordings


def recordings_dir() -> Path:
    return Path(current_app.config["PORTAL_RECORDINGS_DIR"])


def recording_file(row: TerminalSession) -> Path | None:
    if not row.recording_path:
        return None
    name = Path(row.recording_path).name  # never a path from outside
    path = recordings_dir() / name
    return path if path.is_file() else None


def recording_for(user, row: TerminalSession) -> Path:
    """The session's recording file for `user` (AccessDenied / NotFound)."""
    if not can_replay(user, row):
        raise AccessDenied("only the session's user or an admin of the machine may replay it")
    path = recording_file(row)
    if path is None:
        raise NotFound("no recording for this session")
    return path


def recording_max_bytes() -> int:
    """PORTAL_RECORDING_MAX_BYTES: output bytes recorded per session (0 = no cap)."""
    from portal.terminal.recorder import DEFAULT_MAX_BYTES

    value = current_app.config.get("PORTAL_RECORDING_MAX_BYTES", DEFAULT_MAX_BYTES)
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return DEFAULT_MAX_BYTES


def recording_url(row: TerminalSession) -> str | None:
    if not row.recording_path:
        return None
    return url_for("terminal_api.recording", sid=row.id)


def prune_recordings(days: int | None = None) -> int:
    from portal.terminal.recorder import prune

    days = current_app.config.get("PORTAL_RECORDING_RETENTION_DAYS", 30) if days is None else days
    removed = prune(recordings_dir(), int(days or 0))
    if removed:
        for row in db.session.scalars(
            select(TerminalSession).where(TerminalSession.recording_path.in_(removed))
        ):
            row.recording_path = None
        db.session.flush()
    return len(removed)


# ---------------------------------------------------------------- ghosts


def close_ghosts(reason: str = "server restarted", *, other_hosts: bool = False) -> int:
    """Mark sessions whose process is gone as closed (on start; no ghosts stay active).

    A row naming another host is checked against its heartbeat when Redis is there; without
    Redis nothing can tell, and the row is left alone unless `other_hosts` is set. The
    terminal server sets it when its worker starts (portal/gunicorn_conf.py): instances that
    serve terminals share a database only through Redis, so such a row was left by an earlier
    incarnation of this one (a container that came back with a new hostname). Any other app
    start (a `flask` command in a container of its own) leaves those rows alone."""
    from portal.terminal.registry import process_alive

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
            row.status = "closed"
            row.shared = False
            row.close_reason = reason
            row.ended_at = row.ended_at or utcnow()
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


# ---------------------------------------------------------------- opening


def _open_shell(target, cols: int, rows: int):
    """A login shell with a PTY on a pooled connection (portal.ssh.open_shell, with the
    paramiko error's kind in the message)."""
    import paramiko

    from portal.ssh import get_pool
    from portal.ssh.connect import unreachable
    from portal.terminal.pump import WINDOW

    channel = get_pool().open_session(target, window_size=WINDOW)
    try:
        channel.get_pty(term="xterm-256color", width=cols, height=rows)
        channel.invoke_shell()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        close_channel(channel)
        raise unreachable(target.host, target.port, f"could not start a shell ({exc})") from None
    except BaseException:
        close_channel(channel)
        raise
    return channel


def machine_for_terminal(user, agent_id: str):
    """The machine, when the user may open a terminal there (NotFound / AccessDenied)."""
    machine = get_machine(user, agent_id)
    try:
        machine_access.require(user, machine, "open_terminal")
        return machine
    except AccessDenied:
        raise AccessDenied("you need operator access to open a terminal on this machine") from None


def check_resume(user, agent_id: str, sid: str) -> TerminalSession:
    """The row of the caller's live session `sid` on this machine, to re-attach to (wherever
    it is held: here, or another process through relay.py). Raises what the socket answers."""
    machine = machine_for_terminal(user, agent_id)
    row = db.session.get(TerminalSession, sid) if len(sid) <= 36 else None
    if row is None or row.user_id != user.id or row.machine_id != machine.id:
        raise NotFound("no such session")
    if row.status == "closed":
        raise Conflict(f"that session has ended ({row.close_reason or 'closed'})")
    return row


def open_terminal(
    user,
    agent_id: str,
    *,
    cols: int,
    rows: int,
    resume: str | None = None,
    client_addr: str | None = None,
    user_agent: str | None = None,
):
    """A LiveSession for the socket: the user's detached one (`resume`), or a new shell.

    Returns (session, resumed). A new session's row is flushed, not committed, and
    its pump is not started: the caller commits, registers, attaches, then starts it.
    """
    from portal.terminal.live import LiveSession
    from portal.terminal.recorder import Recorder
    from portal.terminal.registry import Registry  # noqa: F401

    reg = registry()
    if resume:
        row = check_resume(user, agent_id, resume)
        sess = reg.get(row.id)
        if sess is None or sess.closed:
            raise Conflict("that session has ended (it is not held by this server)")
        return sess, True
    machine = machine_for_terminal(user, agent_id)
    # A place is reserved before the handshake: the cap counts terminals being opened, and a
    # revocation that lands while the handshake runs cancels it (see Registry.reserve).
    elsewhere = live_elsewhere(user.id, reg.server_id) if reg.cap else 0
    reservation = reg.reserve(user.id, machine.id, elsewhere)
    if reservation is None:
        raise Conflict(
            f"you already have {reg.cap} open terminals, the most allowed; close one first"
        )
    try:
        if reservation.cancelled:
            raise Conflict(reservation.cancelled)
        target = ssh_target(machine, user)
        db.release()  # no DB connection held through the SSH handshake
        channel = _open_shell(target, cols, rows)
    except BaseException:
        reg.release(reservation)
        raise
    try:
        row = TerminalSession(
            machine_id=machine.id,
            user_id=user.id,
            status="active",
            cols=cols,
            rows=rows,
            client_addr=(client_addr or "")[:64] or None,
            user_agent=(user_agent or "")[:255] or None,
            server_id=reg.server_id,
            started_at=utcnow(),
            last_activity_at=utcnow(),
        )
        db.session.add(row)
        db.session.flush()
        recorder = None
        try:
            recorder = Recorder(
                recordings_dir(), f"{row.id}.cast", cols, rows, max_bytes=recording_max_bytes()
            )
            row.recording_path = f"{row.id}.cast"
        except OSError:
            log.exception("cannot record session %s", row.id)
        db.session.flush()
        sess = LiveSession(
            reg,
            sid=row.id,
            user_id=user.id,
            machine_id=machine.id,
            agent_id=machine.agent_id,
            channel=channel,
            cols=cols,
            rows=rows,
            recorder=recorder,
        )
        sess.reservation = reservation  # Registry.add ends it
    except BaseException:
        reg.release(reservation)
        close_channel(channel)
        raise
    return sess, False


def abandon(sess) -> None:
    """A new session that will not be served (its row was not committed): free its place
    and close its channel."""
    registry().release(getattr(sess, "reservation", None))
    try:
        sess.close("could not open the terminal")
    except Exception:
        log.exception("terminal: closing an abandoned session failed")


def account_denied(user, token_version) -> str | None:
    """Why this account's credential of `token_version` no longer holds (None: it does)."""
    if user is None or not user.is_active:
        return "the account was deactivated"
    if token_version is not None and user.token_version != token_version:
        return "you were signed out everywhere"
    return None


def denied_now(user_id: int, token_version, machine_id: int, reg=None) -> str | None:
    """Why this user may not hold a terminal on this machine any more (None: they may),
    read afresh from the database: the check after a new session is registered, for a
    revocation that was written between the first check and the registration. With `reg`,
    the cap is counted again with other processes' rows as they are now (two workers
    opening at once each saw the other's count before it was written)."""
    from portal.accounts.models import User

    try:
        user = db.session.get(User, user_id)
        why = account_denied(user, token_version)
        if why:
            return why
        why = machine_access.connect_refusal(user, access.machine_by_id(machine_id))
        if why:
            return why
        if reg is not None and reg.cap:
            if reg.count_here(user_id) + live_elsewhere(user_id, reg.server_id) > reg.cap:
                return (
                    f"you already have {reg.cap} open terminals, the most allowed; close one first"
                )
        return None
    finally:
        db.session.rollback()
        db.session.remove()
