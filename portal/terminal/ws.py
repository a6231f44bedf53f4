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
import select
import socket
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, request
from flask_login import current_user

from portal.errors import PortalError
from portal.extensions import db, sock
from portal.ssh.connect import timeval
from portal.terminal import relay, services
from portal.terminal.bridge import Client

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


# A masked, empty, unsolicited Pong (RFC 6455 5.5.3: "a unidirectional heartbeat"): what
# the reader's frame parser is given when every byte received was a data frame handled by
# the fast path, so it sees the client alive and its ping timer keeps running.
_HEARTBEAT = bytes((0x8A, 0x80)) + b"\0\0\0\0"
_FAST_MAX = INPUT_MAX + 14  # the largest frame the fast path buffers (header included)
_QUIET = 1.0  # seconds without input before the reader's own loop gets control back


def _unmask(mask: bytes, payload: bytes) -> bytes:
    n = len(payload)
    if n == 1:  # most keystrokes
        return bytes((payload[0] ^ mask[0],))
    if not n:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class _SockProxy:
    """Wraps the raw socket under simple_websocket: whole frames (sendall) under one lock,
    so pings from its reader thread never split a frame of ours, and input backpressure:
    the reader stops taking bytes off the socket while too many frames wait for us.

    Input fast path: once the terminal's frame handler is installed, complete, unfragmented,
    uncompressed, masked text and binary frames are parsed here (in the reader thread, the
    moment they arrive) and handed to the handler, instead of going through wsproto's
    generic parser first (~60 us per keystroke here). Control frames (ping, pong, close)
    and everything after them in the same read go to wsproto whole and in order; a frame
    the fast path cannot take whole (fragments, compressed, oversized, malformed) makes it
    step aside for good, and wsproto gets every byte from there on.
    """

    def __init__(self, sock, ws):
        self._sock = sock
        self._ws = ws
        self._lock = threading.Lock()
        self.on_close = None  # called when the reader thread is done with the socket
        self._pending = bytearray()  # received, not yet parsed nor passed on
        self._fast = True  # False once anything unusual was seen: all bytes go to wsproto
        self._keys = None  # set with the inbox's handler: takes a keystroke frame's payload
        # The fast path waits for the next frame in recv(2) itself, bounded by SO_RCVTIMEO
        # (a quiet second, as below), instead of select(2) then recv(2): one system call
        # and one Python call less per keystroke. Only on a blocking socket (gunicorn's).
        self._timed = False
        try:
            if sock.gettimeout() is None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(_QUIET))
                self._timed = True
        except (OSError, AttributeError):
            pass

    def _step_aside(self) -> None:
        """The fast path is off for good: wsproto reads the socket the usual way."""
        self._fast = False
        if self._timed:
            self._timed = False
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(0))
            except OSError:
                pass

    def send(self, data):
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def sendall(self, data):
        self.send(data)

    def recv(self, n):
        ws = self._ws
        inbox = ws.input_buffer
        while (
            len(inbox) > INPUT_BACKLOG or getattr(inbox, "queued", 0) > INPUT_BACKLOG_BYTES
        ) and ws.connected:
            time.sleep(0.01)
            inbox = ws.input_buffer
        if not self._fast:
            if self._pending:  # bytes held back while the fast path was on
                data, self._pending = bytes(self._pending), bytearray()
                return data
            return self._sock.recv(n)
        while True:
            try:
                data = self._sock.recv(n)
            except BlockingIOError:  # SO_RCVTIMEO: a quiet second (see below)
                return _HEARTBEAT
            keys = self._keys
            size = len(data) - 6
            if (
                keys is not None
                and 0 < size < 126
                and data[0] == 0x82  # FIN, binary
                and data[1] == 0x80 | size  # masked, 7-bit length
                and not self._pending
            ):
                # The usual read, a keystroke: exactly one small binary frame. The same as
                # _take() would do with it, in a few steps (the first code to run after a
                # wake-up runs on cold caches: every step counts).
                try:
                    keys(_unmask(data[2:6], data[6:]))
                except Exception:
                    log.exception("terminal: handling a frame failed")
            else:
                if not data:  # the end: wsproto gets what is left (it reports a cut frame)
                    self._step_aside()
                    data, self._pending = bytes(self._pending), bytearray()
                    return data
                self._pending += data
                out = self._take(getattr(ws.input_buffer, "handler", None))
                if out:
                    return out
            # All handled here (or only part of a frame so far): keep reading while the
            # client keeps sending; after a quiet second wsproto gets a heartbeat, so the
            # reader goes back to its select() and its ping timer. (Parsing a heartbeat per
            # keystroke would cost what the fast path saves.)
            if self._timed:
                if not ws.connected:
                    return _HEARTBEAT
                continue  # recv(2) waits, up to SO_RCVTIMEO
            try:
                more = ws.connected and select.select([self._sock], [], [], _QUIET)[0]
            except (OSError, ValueError):  # closed under us
                more = False
            if not more:
                return _HEARTBEAT

    def _take(self, handler) -> bytes:
        """Parse the whole frames at the front of `_pending`. Simple data frames go to
        `handler` here; what wsproto must see is returned: whole frames only (a partial
        frame waits in `_pending`), in order, so wsproto's stream never starts mid-frame.
        Before the handler is installed every frame goes to wsproto (the _Inbox queues it);
        after a frame the fast path does not take, so does everything else, for good."""
        buf = self._pending
        at = 0
        passed = at  # buf[:passed] was handled here; buf[passed:at] goes to wsproto
        while len(buf) - at >= 2:
            b0, b1 = buf[at], buf[at + 1]
            size, head = b1 & 0x7F, 2
            if size == 126:
                if len(buf) - at < 4:
                    break
                size, head = int.from_bytes(buf[at + 2 : at + 4], "big"), 4
            elif size == 127:
                if len(buf) - at < 10:
                    break
                size, head = int.from_bytes(buf[at + 2 : at + 10], "big"), 10
            masked = b1 & 0x80
            end = at + head + (4 if masked else 0) + size
            opcode = b0 & 0x0F
            control = opcode >= 0x8  # ping, pong, close: passed on whole, in order
            if (
                b0 & 0x70  # RSV bits (compressed)
                or not masked  # a protocol error wsproto reports
                or (not control and (not b0 & 0x80 or opcode not in (0x1, 0x2)))  # fragments
                or end - at > _FAST_MAX
            ):
                self._step_aside()
                at = len(buf)
                break
            if len(buf) < end:
                break
            if control or handler is None or passed < at:
                at = end  # to wsproto, in order
                continue
            mask = bytes(buf[at + head : at + head + 4])
            payload = _unmask(mask, bytes(buf[at + head + 4 : end]))
            if opcode == 0x1:
                try:
                    msg = payload.decode("utf-8")
                except UnicodeDecodeError:
                    self._step_aside()  # wsproto closes the socket with 1007
                    at = len(buf)
                    break
            else:
                msg = payload
            at = passed = end
            try:
                handler(msg)
            except Exception:
                log.exception("terminal: handling a frame failed")
        out = bytes(buf[passed:at])
        del buf[:at]
        return out

    def close(self):
        try:
            self._sock.close()
        finally:
            if self.on_close is not None:
                self.on_close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _Inbox(list):
    """Replaces simple_websocket's input list: once a handler is set, messages are handled
    in the socket's reader thread as they arrive (no hand-off to the request thread, so a
    keystroke reaches the SSH channel with one thread switch less)."""

    def __init__(self, items=()):
        super().__init__(items)
        self.lock = threading.Lock()
        self.handler = None
        self.proxy = None  # the _SockProxy whose fast path start() hands `keys` to
        self.queued = sum(len(m) for m in self)  # bytes waiting (the reader's bound)

    def append(self, msg) -> None:
        handler = self.handler
        if handler is None:
            with self.lock:
                if self.handler is None:
                    super().append(msg)
                    self.queued += len(msg)
                    return
                handler = self.handler
        try:
            handler(msg)
        except Exception:
            log.exception("terminal: handling a frame failed")

    def pop(self, index=-1):  # simple_websocket's receive() (the watch socket) takes here
        with self.lock:
            msg = super().pop(index)
            self.queued -= len(msg)
            return msg

    def start(self, handler, keys=None) -> None:
        """Handle messages with `handler` from now on (queued ones first). `keys`, if given,
        is what the reader's fast path hands a small binary frame's payload to instead."""
        with self.lock:
            for msg in list(self):
                try:
                    handler(msg)
                except Exception:
                    log.exception("terminal: handling a frame failed")
            self.clear()
            self.queued = 0
            self.handler = handler
            if keys is not None and isinstance(self.proxy, _SockProxy):
                self.proxy._keys = keys


def _prepare(ws) -> None:
    if not isinstance(ws.sock, _SockProxy):
        ws.sock = _SockProxy(ws.sock, ws)
        try:
            ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
    if not isinstance(ws.input_buffer, _Inbox):
        ws.input_buffer = _Inbox(ws.input_buffer)
    ws.input_buffer.proxy = ws.sock


def _reader_last(route):
    """The socket's reader thread has the last word: when a route returns after the reader
    saw the end (a close from the client, a protocol error), wait for that thread to finish
    before the WSGI server gets the connection back. The reader marks the socket closed
    before it sends its close frame; without this, the server could write to (or close) the
    connection first and the client would never see the close code (the dev server even
    writes an HTTP response into the socket)."""

    @functools.wraps(route)
    def wrapper(ws, *args, **kwargs):
        try:
            return route(ws, *args, **kwargs)
        finally:
            # After a close of our own the reader ends on the client's reply or within its
            # 1 s receive timeout; the bound is for a client that never answers.
            if not ws.connected:
                ws.thread.join(timeout=2.0)

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
    )


def _run_terminal(ws, user, agent_id, *, args, ticket_agent, client_addr, user_agent) -> None:
    """The terminal socket's life, from `ready` to the end."""
    _prepare(ws)
    if ticket_agent is not None and ticket_agent != agent_id:
        _refuse(ws, "this ticket is for another machine")
        return
    cols = services.parse_size(args.get("cols"), 80)
    rows = services.parse_size(args.get("rows"), 24)
    resume = args.get("session") or None
    client = Client(ws, client_addr)
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
        _refuse(ws, err.message)
        return
    except Exception:
        db.session.rollback()
        if sess is not None and not resumed:
            services.abandon(sess)  # e.g. the commit failed: the channel must not leak
        log.exception("opening a terminal failed")
        _refuse(ws, "could not open the terminal", 1011)
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
            _refuse(ws, "could not open the terminal", 1011)
            return
        try:
            why = why or services.denied_now(uid, tv, sess.machine_id, reg)
        except Exception:
            log.exception("re-checking terminal access failed")
            why = "could not open the terminal"
        if why:
            sess.close(why)
            _refuse(ws, why, CLOSE_NORMAL)
            return
    elif cols != sess.cols or rows != sess.rows:
        sess.resize(cols, rows)
    try:
        sess.attach(client, resumed)
    except Exception:
        _refuse(ws, "the session has ended", CLOSE_NORMAL)
        return
    if not resumed:
        sess.start()  # after attach: the first prompt goes to this socket
    try:
        _serve(ws, sess, client)
    finally:
        sess.detach(client)


def _serve(ws, sess, client: Client) -> None:
    """Frames are handled in the reader thread (`_Inbox`); this thread waits for the end,
    delivers kicks (error/exit), and feeds input that would block on the SSH window."""
    feeder = _InputFeeder(sess, client)
    ws.sock.on_close = client.wake  # the reader thread saw the end of the socket
    ws.input_buffer.start(functools.partial(_on_frame, sess, client, feeder), keys=feeder.key)
    while True:
        kick = client.kick
        if kick is not None:
            if kick[0] == "too_big":
                _close_too_big(client)
            else:
                _deliver_kick(client, kick)
            return
        if not ws.connected:
            return
        if feeder.backlog:
            feeder.drain()
            continue
        # Kicks, queued input and the end of the socket set this; keystrokes do not (they
        # are handled in the reader thread), so an idle or typing session costs no wake-ups.
        client.event.wait(10.0)
        client.event.clear()


class _InputFeeder:
    """Input goes to the channel from the reader thread while the SSH window has room;
    otherwise it queues (bounded: the reader thread then waits, i.e. TCP backpressure) and
    the request thread sends it, so acks keep flowing while a remote program is not reading."""

    LIMIT = 1024 * 1024

    def __init__(self, sess, client: Client):
        self.sess = sess
        self.client = client
        # The Condition's own lock, taken directly where no wait/notify follows: `with` on a
        # Lock is one C call, on a Condition two Python-level ones (per keystroke, twice).
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.backlog: deque[bytes] = deque()
        self.size = 0
        self.busy = False

    def feed(self, data: bytes) -> None:
        with self.lock:
            if not self.backlog and not self.busy and self.sess.can_send(len(data)):
                self.busy = True
            else:
                while self.size > self.LIMIT and not self.client.kick and self.client.ws.connected:
                    self.cond.wait(0.5)
                self.backlog.append(data)
                self.size += len(data)
                self.client.wake()
                return
        try:
            self.sess.input(data)
        finally:
            with self.lock:
                self.busy = False

    def key(self, data: bytes) -> None:
        """A binary frame of at most 125 bytes from the reader's fast path: what `_on_frame`
        and `feed` do with it, without the checks that cannot fail for it (size, type)."""
        if self.client.kick is not None:
            return
        lock = self.lock
        lock.acquire()
        if self.backlog or self.busy or not self.sess.can_send(len(data)):
            lock.release()
            self.feed(data)  # the general case: queue it (or wait for room)
            return
        self.busy = True
        lock.release()
        try:
            self.sess.input(data)
        finally:
            with lock:
                self.busy = False

    def drain(self) -> None:
        while True:
            with self.cond:
                if not self.backlog or self.busy:
                    return
                data = self.backlog.popleft()
                self.size -= len(data)
                self.busy = True
                self.cond.notify_all()
            try:
                self.sess.input(data)
            finally:
                with self.cond:
                    self.busy = False


def _on_frame(sess, client: Client, feeder: _InputFeeder, msg) -> None:
    if client.kick is not None:
        return
    if isinstance(msg, (bytes, bytearray)):
        if len(msg) > INPUT_MAX:
            client.kick = ("too_big",)
            client.wake()
            return
        feeder.feed(bytes(msg))
        return
    if len(msg) > INPUT_MAX:
        client.kick = ("too_big",)
        client.wake()
        return
    try:
        frame = json.loads(msg)
    except ValueError:
        return
    if not isinstance(frame, dict):
        return
    kind = frame.get("type")
    if kind == "input":
        data = frame.get("data")
        if isinstance(data, str) and data:
            encoded = data.encode("utf-8", "replace")
            if len(encoded) > INPUT_MAX:
                client.kick = ("too_big",)
                client.wake()
                return
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


def _close_too_big(client: Client) -> None:
    with client.send_lock:
        _refuse(client.ws, f"frame too large (limit {INPUT_MAX} bytes)", CLOSE_TOO_BIG)


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
    why = services.registry().take_watch_place(g.ws_user.id, sid)
    if why:
        return _plain(429, why)
    g.ws_watch_place = (g.ws_user.id, sid)
    return None


@bp.teardown_request
def _give_watch_place(_exc=None):
    place = g.pop("ws_watch_place", None)
    if place is not None:
        services.registry().give_watch_place(*place)


@sock.route("/api/terminal/sessions/<sid>/watch/ws", bp=bp)
@_reader_last
def watch(ws, sid):
    _prepare(ws)
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
    reg.add_watcher(q)
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
    except Exception:
        return
    finally:
        reg.bus.unsubscribe(handle)
        reg.remove_watcher(q)


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
