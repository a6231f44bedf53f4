"""Opening a terminal: a new login shell on the machine, or a re-attach to the user's own
live session; and the access check again once a new session is registered.

The socket route (ws.py) commits the new row, registers the session, attaches its socket,
then starts its pump; a session that will not be served is abandoned here.
"""

from __future__ import annotations

import logging

import paramiko

from portal import signals
from portal.accounts.models import User
from portal.db import utcnow
from portal.errors import Conflict, NotFound
from portal.extensions import db
from portal.machines import access as machine_access
from portal.machines.targets import ssh_target
from portal.ssh import get_pool
from portal.ssh.connect import unreachable
from portal.ssh.exec import close_channel
from portal.terminal import access, policy, recordings, services
from portal.terminal.live import LiveSession
from portal.terminal.models import TerminalSession
from portal.terminal.pump import WINDOW
from portal.terminal.recorder import Recorder

log = logging.getLogger(__name__)


def _open_shell(target, cols: int, rows: int):
    """A login shell with a PTY on a pooled connection (portal.ssh.open_shell, with the
    paramiko error's kind in the message)."""
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


def check_resume(user, agent_id: str, sid: str) -> TerminalSession:
    """The row of the caller's live session `sid` on this machine, to re-attach to (wherever
    it is held: here, or another process through relay.py). Raises what the socket answers."""
    machine = policy.machine_for_terminal(user, agent_id)
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
    reg = services.registry()
    if resume:
        row = check_resume(user, agent_id, resume)
        sess = reg.get(row.id)
        if sess is None or sess.closed:
            raise Conflict("that session has ended (it is not held by this server)")
        return sess, True
    machine = policy.machine_for_terminal(user, agent_id)
    # A place is reserved before the handshake: the cap counts terminals being opened, and a
    # revocation that lands while the handshake runs cancels it (see Registry.reserve).
    elsewhere = services.live_elsewhere(user.id, reg.server_id) if reg.cap else 0
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
                recordings.recordings_dir(),
                f"{row.id}.cast",
                cols,
                rows,
                max_bytes=recordings.recording_max_bytes(),
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
    signals.send(signals.terminal_opened, session_id=row.id, user=user, machine_id=machine.id)
    return sess, False


def abandon(sess) -> None:
    """A new session that will not be served (its row was not committed): free its place
    and close its channel."""
    services.registry().release(getattr(sess, "reservation", None))
    try:
        sess.close("could not open the terminal")
    except Exception:
        log.exception("terminal: closing an abandoned session failed")


def denied_now(user_id: int, token_version, machine_id: int, reg=None) -> str | None:
    """Why this user may not hold a terminal on this machine any more (None: they may),
    read afresh from the database: the check after a new session is registered, for a
    revocation that was written between the first check and the registration. With `reg`,
    the cap is counted again with other processes' rows as they are now (two workers
    opening at once each saw the other's count before it was written)."""
    try:
        user = db.session.get(User, user_id)
        why = policy.account_denied(user, token_version)
        if why:
            return why
        why = machine_access.connect_refusal(user, access.machine_by_id(machine_id))
        if why:
            return why
        if reg is not None and reg.cap:
            if reg.count_here(user_id) + services.live_elsewhere(user_id, reg.server_id) > reg.cap:
                return (
                    f"you already have {reg.cap} open terminals, the most allowed; close one first"
                )
        return None
    finally:
        db.session.rollback()
        db.session.remove()
