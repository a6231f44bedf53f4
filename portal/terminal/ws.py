"""The terminal's WebSocket routes: the terminal itself and the read-only watch socket.

Authentication happens before the upgrade (a refused socket gets a plain HTTP
401/403, never a 101): the browser's session cookie with an Origin of the
portal's own, else a single-use `?ticket=`, else `?token=` (JWT or API key).
Everything after the upgrade follows DESIGN.md, "Terminal socket contract".
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import socket
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, request
from flask_login import current_user

from portal.errors import PortalError
from portal.extensions import db, sock
from portal.terminal import relay, services
from portal.terminal.live import Client, cut_socket

log = logging.getLogger(__name__)

bp = Blueprint("terminal_ws", __name__)

INPUT_MAX = 64 * 1024  # bytes per input frame; larger -> close 1009
INPUT_BACKLOG = 256  # frames waiting for the bridge before the socket stops reading
INPUT_BACKLOG_BYTES = 1024 * 1024  # and bytes: past either, the reader stops taking input
WATCH_QUEUE_MAX = 2 * 1024 * 1024
WATCH_RECHECK = 10.0  # seconds between a watcher's access re-checks

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


# ---------------------------------------------------------------- socket plumbing


def _wsgi_socket(environ) -> socket.socket | None:
    """The connection's socket as the WSGI server passes it (the keys flask-sock's server
    reads it from): for TCP_NODELAY, cutting a stuck send, and seeing the reader finish."""
    sock = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    return sock if isinstance(sock, socket.socket) else None


def _nodelay(sock: socket.socket | None) -> None:
    """Small frames (an echoed keystroke) leave at once instead of waiting for an ACK."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def _reader_last(route):
    """The socket library's reader thread has the last word: when a route returns after the
    socket closed (a close from the client, a protocol error, our own close), wait for the
    reader to be done with the connection (it closes the socket last, after its close
    frame) before the WSGI server gets it back. Without this, the server could write to (or
    close) the connection first and the client would never see the close code (the dev
    server even writes an HTTP response into the socket)."""

    @functools.wraps(route)
    def wrapper(ws, *args, **kwargs):
        raw = _wsgi_socket(request.environ)
        try:
            return route(ws, *args, **kwargs)
        finally:
            # Every way out of these routes closes the socket or follows its end. After a
            # close of our own the reader ends on the client's reply; the bound is for a
            # client that never answers. (Not `ws.connected`: the reader sets it again
            # after each message it takes, so it can read True just after our close.)
            if raw is not None:
                deadline = time.monotonic() + 2.0
                while raw.fileno() != -1 and time.monotonic() < deadline:
                    time.sleep(0.01)

    return wrapper


def _send_json(ws, obj) -> None:
    ws.send(json.dumps(obj, separators=(",", ":")))


def _close(ws, code: int = CLOSE_NORMAL, message: str | None = None) -> None:
    try:
        ws.close(reason=code, message=(message or "")[:120] or None)
    except Exception:  # noqa: S110 - already closed
        pass


def _refuse(ws, message: str, code: int = CLOSE_POLICY) -> None:
    try:
        _send_json(ws, {"type": "error", "message": message})
    except Exception:  # noqa: S110
        pass
    _close(ws, code, message)


# ---------------------------------------------------------------- auth (before the upgrade)


def _portal_origins() -> set[str]:
    scheme = "https" if request.is_secure else "http"
    origins = {f"{scheme}://{request.host}".lower()}
    base = current_app.config.get("PORTAL_BASE_URL")
    if base:
        parts = urlsplit(base)
        origins.add(f"{parts.scheme}://{parts.netloc}".lower())
    return origins


def _plain(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


@bp.before_request
def _authenticate():
    from portal.accounts.tokens import user_from_token

    g.ws_user = None
    g.ws_ticket_agent = None
    # No permessage-deflate on terminal sockets: zlib on every keystroke and echo costs
    # latency and server CPU, and compressing attacker-influenced output in one context with
    # secrets on the same screen is a compression side channel (CRIME/BREACH). The socket
    # library negotiates from these headers, so the offer is dropped before the upgrade.
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    ticket = request.args.get("ticket")
    token = request.args.get("token")
    if current_user.is_authenticated and not ticket and not token:
        origin = (request.headers.get("Origin") or "").rstrip("/").lower()
        if origin not in _portal_origins():
            return _plain(403, "cross-site WebSocket refused")
        g.ws_user = current_user._get_current_object()
        g.ws_via = "session"
        return None
    if ticket:
        found = services.redeem_ticket(ticket)
        if found is None:
            return _plain(401, "invalid or expired ticket")
        g.ws_user, g.ws_ticket_agent = found
        g.ws_via = "ticket"
        return None
    if token:
        user = user_from_token(token)
        if user is None:
            return _plain(401, "invalid token")
        g.ws_user = user
        g.ws_via = "token"
        return None
    if current_user.is_authenticated:  # pragma: no cover - handled above
        return None
    return _plain(401, "authentication required")


def _client_addr() -> str:
    return (request.remote_addr or "")[:64]


# ---------------------------------------------------------------- the terminal


@sock.route("/api/terminal/<agent_id>/ws", bp=bp)
@_reader_last
def terminal(ws, agent_id):
    if relay.serve_if_held_elsewhere(
        ws,
        g.ws_user,
        agent_id,
        args=request.args,
        ticket_agent=g.ws_ticket_agent,
        client_addr=_client_addr(),
    ):
        return  # a re-attach to a shell another process holds, served over the bus
    _run_terminal(
        ws,
        g.ws_user,
        agent_id,
        args=request.args,
        ticket_agent=g.ws_ticket_agent,
        client_addr=_client_addr(),
        user_agent=request.headers.get("User-Agent"),
        sock=_wsgi_socket(request.environ),
    )


def _run_terminal(
    ws, user, agent_id, *, args, ticket_agent, client_addr, user_agent, sock=None
) -> None:
    """The terminal socket's life, from `ready` to the end."""
    _nodelay(sock)
    client = Client(ws, client_addr, sock)
    # Frames are taken off the socket from now on; until the session is set up they wait
    # (bounded, see _Receiver), so the handshake below never lets input pile up unbounded.
    receiver = _Receiver(ws, client)
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
        sess, resumed = services.open_terminal(
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
            services.abandon(sess)
        _refuse_client(client, err.message)
        return
    except Exception:
        db.session.rollback()
        if sess is not None and not resumed:
            services.abandon(sess)  # e.g. the commit failed: the channel must not leak
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
            services.abandon(sess)
            _refuse_client(client, "could not open the terminal", 1011)
            return
        try:
            why = why or services.denied_now(uid, tv, sess.machine_id, reg)
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


def _serve(ws, sess, client: Client, receiver: _Receiver) -> None:
    """Frames are handled in the receiver's thread; this thread waits for the end, delivers
    kicks (error/exit) and feeds input that would wait for the SSH window."""
    feeder = _InputFeeder(sess, client)
    receiver.start(functools.partial(_on_frame, sess, client, feeder))
    while True:
        kick = client.kick
        if kick is not None:
            if kick[0] != "refused":  # the receiver has closed the socket itself
                _deliver_kick(client, kick)
            return
        if receiver.done or not ws.connected:
            return
        if feeder.backlog:
            feeder.drain()
            continue
        # Kicks, queued input and the end of the socket set this; keystrokes do not (they
        # are handled in the receiver's thread), so an idle or typing session costs no
        # wake-ups here.
        client.event.wait(10.0)
        client.event.clear()


class _Refusal(Exception):
    """A frame the socket is closed for: `code` (1008, 1009) and the message the client
    gets in its `error` frame and the close reason."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _refuse_client(client: Client, message: str, code: int = CLOSE_POLICY) -> None:
    """`error` then close, in order with the session's other sends."""
    with client.send_lock:
        _refuse(client.ws, message, code)


class _Receiver:
    """Takes the client's frames off the socket (flask-sock's `ws.receive()`) in a thread of
    its own, from the upgrade on, and hands them to the terminal's frame handler.

    Until the session is set up (the SSH handshake runs in the request thread meanwhile),
    frames wait here, at most INPUT_BACKLOG frames and INPUT_BACKLOG_BYTES bytes; past
    either, or for a frame over INPUT_MAX, the socket is closed (1008, 1009) and the
    connection cut, rather than let input pile up. A frame the handler refuses (_Refusal)
    closes it the same way.
    """

    RECEIVE_WAIT = 5.0  # seconds per receive(): a socket we closed ends the thread by then

    def __init__(self, ws, client: Client):
        self.ws = ws
        self.client = client
        self.lock = threading.Lock()
        self.handler = None
        self.pending: list = []
        self.pending_bytes = 0
        self.done = False  # the thread has ended (socket closed, or a frame refused)
        self.stopped = False  # the request thread is done with this socket: frames dropped
        self.thread = threading.Thread(target=self._run, name="terminal-input", daemon=True)
        self.thread.start()

    def start(self, handler) -> None:
        """Handle frames with `handler` from now on (the waiting ones first, in order)."""
        with self.lock:
            pending, self.pending, self.pending_bytes = self.pending, [], 0
            for msg in pending:
                if not self._handle(handler, msg):
                    break
            self.handler = handler

    def stop(self) -> None:
        self.stopped = True

    def _run(self) -> None:
        ws, client = self.ws, self.client
        try:
            while not self.stopped:
                try:
                    msg = ws.receive(timeout=self.RECEIVE_WAIT)
                except Exception:  # ConnectionClosed: the socket is done
                    return
                if msg is None:
                    if not ws.connected:
                        return
                    continue
                if len(msg) > INPUT_MAX:
                    self._refuse(
                        _Refusal(CLOSE_TOO_BIG, f"frame too large (limit {INPUT_MAX} bytes)")
                    )
                    return
                handler = self.handler
                if handler is None:
                    with self.lock:
                        handler = self.handler
                        if handler is None:
                            if not self._hold(msg):
                                return
                            continue
                if self.stopped or not self._handle(handler, msg):
                    return
        finally:
            self.done = True
            client.wake()

    def _hold(self, msg) -> bool:
        """Keep a frame that came before the handler (under self.lock). False: refused."""
        if (
            len(self.pending) >= INPUT_BACKLOG
            or self.pending_bytes + len(msg) > INPUT_BACKLOG_BYTES
        ):
            self._refuse(_Refusal(CLOSE_POLICY, "too much input before the terminal was ready"))
            return False
        self.pending.append(msg)
        self.pending_bytes += len(msg)
        return True

    def _handle(self, handler, msg) -> bool:
        try:
            handler(msg)
            return True
        except _Refusal as refusal:
            self._refuse(refusal)
        except Exception:
            log.exception("terminal: handling a frame failed")
            return True
        return False

    def _refuse(self, refusal: _Refusal) -> None:
        client = self.client
        if client.kick is None:
            client.kick = ("refused", refusal.message)
        self.stopped = True
        with client.send_lock:
            _refuse(client.ws, refusal.message, refusal.code)
            # The socket library reads on for as long as the client sends (it has no way to
            # stop taking bytes), so a client refused for its input is cut off here, right
            # after the close frame (nothing of ours can follow it): what it sends next is
            # refused by the kernel.
            cut_socket(client)
        client.wake()


class _InputFeeder:
    """Input goes to the channel from the receiver's thread while the SSH window has room;
    otherwise it queues (bounded: past LIMIT the socket is closed) and the request thread
    sends it, so acks keep flowing while a remote program is not reading its input."""

    LIMIT = INPUT_BACKLOG_BYTES
    # Input up to this size is sent from the receiver's thread when the window has room;
    # larger input (a paste) always goes through the request thread, which may wait for
    # the window without holding up acks.
    INLINE_MAX = 1024

    def __init__(self, sess, client: Client):
        self.sess = sess
        self.client = client
        self.cond = threading.Condition()
        self.backlog: deque[bytes] = deque()
        self.size = 0
        self.busy = False

    def feed(self, data: bytes) -> None:
        with self.cond:
            inline = (
                not self.backlog
                and not self.busy
                and len(data) <= self.INLINE_MAX
                and self.sess.can_send()
            )
            if inline:
                self.busy = True
            else:
                if self.size + len(data) > self.LIMIT:
                    raise _Refusal(
                        CLOSE_POLICY, "input is arriving faster than the machine reads it"
                    )
                self.backlog.append(data)
                self.size += len(data)
                self.client.wake()
                return
        try:
            self.sess.input(data)
        finally:
            with self.cond:
                self.busy = False
                if self.backlog:
                    self.cond.notify_all()

    def drain(self) -> None:
        while True:
            with self.cond:
                while self.busy and not self.client.kick:
                    self.cond.wait(0.5)
                if not self.backlog or self.busy:
                    return
                data = self.backlog.popleft()
                self.size -= len(data)
                self.busy = True
            try:
                self.sess.input(data)
            finally:
                with self.cond:
                    self.busy = False


def _on_frame(sess, client: Client, feeder: _InputFeeder, msg) -> None:
    if client.kick is not None:
        return
    if isinstance(msg, (bytes, bytearray)):
        feeder.feed(bytes(msg))
        return
    try:
        frame = json.loads(msg)
    except ValueError:
        return
    except RecursionError:
        # '[' * 30000 fits in a frame; json gives up on it. One line, no traceback.
        log.warning("terminal %s: a text frame nested too deeply; socket closed", sess.sid)
        raise _Refusal(CLOSE_POLICY, "frame nested too deeply") from None
    if not isinstance(frame, dict):
        return
    kind = frame.get("type")
    if kind == "input":
        data = frame.get("data")
        if isinstance(data, str) and data:
            encoded = data.encode("utf-8", "replace")
            if len(encoded) > INPUT_MAX:
                raise _Refusal(CLOSE_TOO_BIG, f"frame too large (limit {INPUT_MAX} bytes)")
            feeder.feed(encoded)
    elif kind == "resize":
        c, r = frame.get("cols"), frame.get("rows")
        if type(c) is int and type(r) is int and 1 <= c <= 1000 and 1 <= r <= 1000:
            sess.resize(c, r)
    elif kind == "ack":
        n = frame.get("bytes")
        if type(n) is int and n >= 0:
            sess.ack(client, n)
    elif kind == "ping":
        try:
            client.send_json({"type": "pong"})
        except Exception:  # noqa: S110 - the socket is going away
            pass
    # anything else: ignored


def _deliver_kick(client: Client, kick: tuple) -> None:
    try:
        with client.send_lock:
            if kick[0] == "exit":
                _send_json(client.ws, {"type": "exit", "code": kick[1], "reason": kick[2]})
            else:
                _send_json(client.ws, {"type": "error", "message": kick[1]})
            _close(client.ws, CLOSE_NORMAL)
    except Exception:  # noqa: S110 - the socket is gone already
        pass


# ---------------------------------------------------------------- watching


class _WatchQueue:
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
def _take_watch_place():
    """Each watch socket costs threads: its place (per user, per session, in this process) is
    taken after authentication and before the upgrade; over a cap the answer is a plain 429.
    The place is given back when the request ends, however it ends."""
    if request.endpoint != "terminal_ws.watch" or g.get("ws_user") is None:
        return None
    sid = str((request.view_args or {}).get("sid", ""))[:36]
    why = services.registry().watchers.take_place(g.ws_user.id, sid)
    if why:
        return _plain(429, why)
    g.ws_watch_place = (g.ws_user.id, sid)
    return None


@bp.teardown_request
def _give_watch_place(_exc=None):
    place = g.pop("ws_watch_place", None)
    if place is not None:
        services.registry().watchers.give_place(*place)


@sock.route("/api/terminal/sessions/<sid>/watch/ws", bp=bp)
@_reader_last
def watch(ws, sid):
    _nodelay(_wsgi_socket(request.environ))
    user = g.ws_user
    try:
        row = services.get_session(user, sid)
        if not (row.shared or services.can_close(user, row)):
            raise PortalError("this session is not shared")
        if row.status == "closed":
            raise PortalError(f"the session has ended ({row.close_reason or 'closed'})")
        machine = services.access.machine_by_id(row.machine_id)
        if g.ws_ticket_agent is not None and g.ws_ticket_agent != machine.agent_id:
            raise PortalError("this ticket is for another machine")
        uid, tv, machine_id = user.id, user.token_version, row.machine_id
    except PortalError as err:
        db.session.rollback()
        db.session.remove()
        _refuse(ws, err.message)
        return
    db.session.rollback()
    db.session.remove()
    reg = services.registry()
    q = _WatchQueue(secrets.token_hex(16), uid, machine_id, sid)
    reg.ensure_started()  # close requests from other processes reach it (Redis)
    reg.watchers.add(q)
    handle = reg.bus.subscribe(sid, q.on_message)
    try:
        reg.bus.request({"op": "snapshot", "sid": sid, "nonce": q.nonce})
        if reg.bus.kind == "local" and reg.get(sid) is None:
            _refuse(ws, "the session is not running on this server", CLOSE_NORMAL)
            return
        _send_json(ws, {"type": "ready", "session_id": sid, "resumed": False, "watch": True})
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
                    _refuse(ws, data.decode("utf-8", "replace"), CLOSE_NORMAL)
                    return
            if q.kicked is not None:
                _refuse(ws, q.kicked, CLOSE_NORMAL)
                return
            if q.overflow:
                _refuse(ws, "this watcher fell too far behind; reload to watch again", 1013)
                return
            if time.monotonic() - checked >= WATCH_RECHECK:
                # Belt and braces for the hooks: access is re-checked every few seconds.
                checked = time.monotonic()
                why = _watch_denied(uid, tv, sid)
                if why:
                    _refuse(ws, why, CLOSE_NORMAL)
                    return
                # An unshared session publishes only while watched: renew the lease.
                reg.bus.request({"op": "watching", "sid": sid})
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
                            _send_json(ws, {"type": "pong"})
                    except (ValueError, AttributeError):
                        pass
                    except RecursionError:
                        log.warning("terminal watch %s: a text frame nested too deeply", sid)
                        _refuse(ws, "frame nested too deeply")
                        return
    except Exception:
        return
    finally:
        reg.bus.unsubscribe(handle)
        reg.watchers.remove(q)


def _send_resize(ws, data: bytes) -> None:
    try:
        cols, rows = (int(x) for x in data.decode("ascii").split("x", 1))
    except (ValueError, UnicodeDecodeError):
        return
    if 1 <= cols <= 1000 and 1 <= rows <= 1000:
        _send_json(ws, {"type": "resize", "cols": cols, "rows": rows})


def _watch_denied(user_id: int, token_version, sid: str) -> str | None:
    """Why this watcher may no longer watch (None: it still may)."""
    from portal.accounts.models import User

    try:
        user = db.session.get(User, user_id)
        why = services.account_denied(user, token_version)
        if why:
            return why
        try:
            row = services.get_session(user, sid)
        except PortalError:
            return "you may no longer watch this session"
        if not (row.shared or services.can_close(user, row)):
            return "the session is no longer shared"
        return None
    except Exception:
        log.exception("re-checking a watcher failed")
        return None
    finally:
        db.session.rollback()
        db.session.remove()
