"""The terminal's WebSocket route: open a shell (or re-attach to one), serve it, end it.

Every socket route of this blueprint is authenticated before the upgrade (ws_auth.py); the
frames are handled in ws_input.py, the watch route is in watch.py. Everything after the
upgrade follows DESIGN.md, "Terminal socket contract".
"""

from __future__ import annotations

import functools
import logging

from flask import Blueprint, g, request

from portal.errors import PortalError
from portal.extensions import db, sock
from portal.terminal import opening, relay, services, ws_auth
from portal.terminal.live import Client
from portal.terminal.ws_common import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    close,
    nodelay,
    reader_last,
    refuse,
    send_json,
    wsgi_socket,
)
from portal.terminal.ws_input import InputFeeder, Receiver, on_frame

log = logging.getLogger(__name__)

bp = Blueprint("terminal_ws", __name__)
bp.before_request(ws_auth.authenticate)  # first, for every socket route (watch.py too)


def _client_addr() -> str:
    return (request.remote_addr or "")[:64]


@sock.route("/api/terminal/<agent_id>/ws", bp=bp)
@reader_last
def terminal(ws, agent_id):
    who = {"args": request.args, "ticket_agent": g.ws_ticket_agent, "client_addr": _client_addr()}
    if relay.serve_if_held_elsewhere(ws, g.ws_user, agent_id, **who):
        return  # a re-attach to a shell another process holds, served over the bus
    _run_terminal(
        ws,
        g.ws_user,
        agent_id,
        **who,
        user_agent=request.headers.get("User-Agent"),
        sock=wsgi_socket(request.environ),
    )


def _run_terminal(
    ws, user, agent_id, *, args, ticket_agent, client_addr, user_agent, sock=None
) -> None:
    """The terminal socket's life, from `ready` to the end."""
    nodelay(sock)
    client = Client(ws, client_addr, sock)
    # Frames are taken off the socket from now on; until the session is set up they wait
    # (bounded, see Receiver), so the handshake below never lets input pile up unbounded.
    receiver = Receiver(ws, client)
    try:
        _open_and_serve(ws, client, receiver, user, agent_id, args, ticket_agent, user_agent)
    finally:
        receiver.stop()


def _open_and_serve(ws, client, receiver, user, agent_id, args, ticket_agent, user_agent):
    client_addr = client.peer
    if ticket_agent is not None and ticket_agent != agent_id:
        _refuse_client(client, "this ticket is for another machine")
        return
    cols = services.parse_size(args.get("cols"), 80)
    rows = services.parse_size(args.get("rows"), 24)
    resume = args.get("session") or None
    uid, tv = user.id, user.token_version
    sess = resumed = None
    try:
        sess, resumed = opening.open_terminal(
            user,
            agent_id,
            cols=cols,
            rows=rows,
            resume=resume,
            client_addr=client_addr,
            user_agent=user_agent,
        )
        db.session.commit()
    except PortalError as err:
        db.session.rollback()
        if sess is not None and not resumed:
            opening.abandon(sess)
        _refuse_client(client, err.message)
        return
    except Exception:
        db.session.rollback()
        if sess is not None and not resumed:
            opening.abandon(sess)  # e.g. the commit failed: the channel must not leak
        log.exception("opening a terminal failed")
        _refuse_client(client, "could not open the terminal", 1011)
        return
    finally:
        db.session.remove()  # no DB connection held for the life of the socket
    if not resumed:
        # A revocation during the handshake cancelled the reservation; one written just
        # before it (its hook found nothing to close yet) is caught by reading access again.
        reg = services.registry()
        try:
            why = reg.add(sess, sess.reservation)
        except Exception:
            log.exception("registering a terminal failed")
            opening.abandon(sess)
            _refuse_client(client, "could not open the terminal", 1011)
            return
        try:
            why = why or opening.denied_now(uid, tv, sess.machine_id, reg)
        except Exception:
            log.exception("re-checking terminal access failed")
            why = "could not open the terminal"
        if why:
            sess.close(why)
            _refuse_client(client, why, CLOSE_NORMAL)
            return
    elif cols != sess.cols or rows != sess.rows:
        sess.resize(cols, rows)
    try:
        sess.attach(client, resumed)
    except Exception:
        if not resumed and not sess.closed:
            # The socket went away while the shell was being opened: nobody to attach.
            sess.close("the browser left before the terminal was ready")
        _refuse_client(client, "the session has ended", CLOSE_NORMAL)
        return
    if not resumed:
        sess.start()  # after attach: the first prompt goes to this socket
    try:
        _serve(ws, sess, client, receiver)
    finally:
        sess.detach(client)


def _serve(ws, sess, client: Client, receiver: Receiver) -> None:
    """Frames are handled in the receiver's thread; this thread waits for the end, delivers
    kicks (error/exit) and feeds input that would wait for the SSH window."""
    feeder = InputFeeder(sess, client)
    receiver.start(functools.partial(on_frame, sess, client, feeder))
    while True:
        kick = client.kick
        if kick is not None:
            if kick[0] != "refused":  # the receiver has closed the socket itself
                _deliver_kick(client, kick)
            return
        if receiver.done or not ws.connected:
            return
        notice = client.take_notice()
        if notice is not None:  # e.g. the watcher count: sent from this socket's own thread
            try:
                client.send_json(notice)
            except Exception:
                return
            continue
        if feeder.backlog:
            feeder.drain()
            continue
        # Kicks, queued input and the end of the socket set this; keystrokes do not (they
        # are handled in the receiver's thread), so an idle or typing session costs no
        # wake-ups here.
        client.event.wait(10.0)
        client.event.clear()


def _refuse_client(client: Client, message: str, code: int = CLOSE_POLICY) -> None:
    """`error` then close, in order with the session's other sends."""
    with client.send_lock:
        refuse(client.ws, message, code)


def _deliver_kick(client: Client, kick: tuple) -> None:
    try:
        with client.send_lock:
            if kick[0] == "exit":
                send_json(client.ws, {"type": "exit", "code": kick[1], "reason": kick[2]})
            else:
                send_json(client.ws, {"type": "error", "message": kick[1]})
            close(client.ws, CLOSE_NORMAL)
    except Exception:  # noqa: S110 - the socket is gone already
        pass
