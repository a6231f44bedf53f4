"""Re-attach across workers and instances, over the terminal bus.

A `?session=<id>` re-attach that reaches a process which does not hold the SSH channel is
served where it landed: this process authenticates the user and answers the upgrade as
usual, then asks the owner (a signed `relay` request on the bus) to attach a remote client.
The owner replays the screen and sends output on the attachment's channel; this process
forwards the socket's input, resizes, acks and pings to the owner. Only bus messages cross
processes: no sockets, no file descriptors.

Whatever attaches or types is signed (HMAC-SHA256 under a key derived from SECRET_KEY) and
bound to one use: the attach request names the session, the user, the user's token
version, a fresh attachment id (the owner takes each once) and a timestamp; each frame of
an attachment its channel and a sequence number. The owner checks the signature, the
session's user and the account (active, same token version, still an operator of the
machine) before it attaches. The owner's frames back are signed too. This module holds the
messages and the accepting process's side; relay_owner.py the owner's.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import time
import weakref
from collections import deque

from portal.errors import PortalError
from portal.extensions import db
from portal.terminal import opening, services, signing
from portal.terminal.models import TerminalSession
from portal.terminal.ws_common import INPUT_MAX, Refusal, parse_control, too_big

log = logging.getLogger(__name__)

ATTACH_MAX_AGE = 30  # seconds a signed attach request is good for (clock skew included)
ATTACH_WAIT = 10.0  # seconds the socket waits for the owner's first frame
KEEPALIVE = 5.0  # seconds between keepalives each way
DEAD_AFTER = 20.0  # no frame from the other end for this long: it is gone
OUT_QUEUE_MAX = 4 * 1024 * 1024  # owner output waiting for the socket (it respects acks)
IN_QUEUE_MAX = 1024 * 1024  # input waiting at the owner for the SSH channel
CREDIT_STEP = 16 * 1024  # bytes written to a socket that does not ack, credited at once

# Frames (kind, payload). To the owner (`<aid>:i`): d input, z "COLSxROWS", a credit (bytes
# rendered or written), p ping, k keepalive, x detach. From it (`<aid>:o`): t a text frame
# (ready, pong), b output, k keepalive, e the last text frame (exit, error) before a close.


# ---------------------------------------------------------------- the socket's side

_ends: weakref.WeakSet = weakref.WeakSet()  # relayed sockets served by this process


def stop_all(reg, reason: str) -> None:
    """This process is going: its relayed sockets close (the page reconnects elsewhere)."""
    for end in list(_ends):
        if end.reg is reg:
            end.stop(1012, reason)


def serve_if_held_elsewhere(ws, user, agent_id: str, *, args, ticket_agent, client_addr) -> bool:
    """Serve a `?session=` re-attach whose shell another process holds, over the bus. False:
    not for here (held here, or by nobody: the caller serves or refuses it as usual)."""
    sid = args.get("session")
    reg = services.registry()
    if not sid or len(sid) > 36 or reg.bus.kind != "redis" or reg.get(sid) is not None:
        return False
    try:
        row = db.session.get(TerminalSession, sid)
        if (
            row is None
            or row.user_id != user.id
            or row.status == "closed"
            or not row.server_id
            or row.server_id == reg.server_id
            or not services.owner_running(reg, row)
        ):
            return False
        server = row.server_id
        if ticket_agent is not None and ticket_agent != agent_id:
            raise PortalError("this ticket is for another machine")
        opening.check_resume(user, agent_id, sid)  # the same rules as a local re-attach
        uid, tv = user.id, user.token_version
    except PortalError as err:
        _close(ws, 1008, err.message, error=True)
        return True
    finally:
        # Rolled back, not removed: on `return False` the caller goes on with `user`, which
        # must stay attached (a detached one cannot be read: a 500 after the upgrade).
        db.session.rollback()
    db.session.remove()  # no DB connection held for the life of the relay
    try:
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # keystrokes, echoes
    except (OSError, AttributeError):
        pass
    end = _RelayEnd(reg, ws, sid, server, uid, tv, client_addr)
    end.run(services.parse_size(args.get("cols"), 80), services.parse_size(args.get("rows"), 24))
    return True


def _close(ws, code: int, message: str, *, error: bool = False) -> None:
    try:
        if error:
            ws.send(json.dumps({"type": "error", "message": message}, separators=(",", ":")))
        ws.close(reason=code, message=message[:120] or None)
    except Exception:  # noqa: S110 - the socket is gone already
        pass


class _RelayEnd:
    """A socket served here for a session another process holds."""

    def __init__(self, reg, ws, sid: str, server: str, uid: int, tv: int, peer: str):
        self.reg, self.ws, self.sid, self.server = reg, ws, sid, server
        self.uid, self.tv, self.peer = uid, tv, peer
        self.aid = secrets.token_hex(16)
        key = signing.relay_key(reg.app)
        self.key = key
        self.tx = signing.Sender(reg.bus, key, f"{self.aid}:i")
        self.rx = signing.Receiver(key, f"{self.aid}:o")
        self.cond = threading.Condition()
        self.items: deque[tuple[bytes, bytes]] = deque()
        self.size = 0
        self.overflow = False
        self.stopped: tuple[int, str, bool] | None = None  # (close code, message, as error)
        self.heard = time.monotonic()
        # Credit for the owner's flow control: bytes written to the socket until the browser
        # acks, then what it acks.
        self.credit_lock = threading.Lock()
        self.written = self.credited = 0
        self.browser_acks = False

    def stop(self, code: int, message: str, error: bool = False) -> None:
        with self.cond:
            if self.stopped is None:
                self.stopped = (code, message, error)
            self.cond.notify()

    def on_frame(self, data: bytes) -> None:  # the bus's thread
        got = self.rx.open(data)
        if got is None:
            return
        kind, payload = got
        with self.cond:
            self.heard = time.monotonic()
            if kind == b"k":
                return
            if self.size + len(payload) > OUT_QUEUE_MAX:
                self.overflow = True
            else:
                self.items.append((kind, payload))
                self.size += len(payload)
            self.cond.notify()

    def _request(self, cols: int, rows: int) -> None:
        msg = {
            "op": "relay",
            "sid": self.sid,
            "aid": self.aid,
            "user_id": self.uid,
            "tv": self.tv,
            "server": self.server,
            "cols": cols,
            "rows": rows,
            "peer": self.peer,
            "ts": int(time.time()),
        }
        msg["sig"] = signing.attach_mac(self.key, msg)
        self.reg.bus.request(msg)

    def run(self, cols: int, rows: int) -> None:
        ws, bus = self.ws, self.reg.bus
        channel = f"{self.aid}:o"
        reader = None
        started = False
        _ends.add(self)
        try:
            bus.subscribe_relay(channel, self.on_frame)
            self._request(cols, rows)
            deadline = time.monotonic() + ATTACH_WAIT
            beat = time.monotonic()
            while True:
                with self.cond:
                    if not self.items and not self.overflow and self.stopped is None:
                        self.cond.wait(1.0)
                    items = list(self.items)
                    self.items.clear()
                    self.size = 0
                    overflow, stopped, heard = self.overflow, self.stopped, self.heard
                for kind, payload in items:
                    if kind == b"e":  # exit or error, then a normal close
                        ws.send(payload.decode("utf-8", "replace"))
                        _close(ws, 1000, "")
                        return
                    if kind == b"t":
                        ws.send(payload.decode("utf-8", "replace"))
                    elif kind == b"b":
                        ws.send(payload)
                        self.written += len(payload)
                    if not started:
                        started = True
                        reader = threading.Thread(
                            target=self._read, name=f"terminal-relay-in-{self.sid[:8]}", daemon=True
                        )
                        reader.start()
                if items and self.written:
                    self._credit_written()
                if stopped is not None:
                    _close(ws, stopped[0], stopped[1], error=stopped[2])
                    return
                if overflow:
                    _close(ws, 1013, "this terminal fell too far behind; reconnect")
                    return
                now = time.monotonic()
                if not started and now > deadline:
                    _close(ws, 1013, "the server holding this terminal did not answer; try again")
                    return
                if started and now - heard > DEAD_AFTER:
                    _close(ws, 1011, "lost contact with the server holding this terminal")
                    return
                if not ws.connected:
                    return
                if started and now - beat >= KEEPALIVE:
                    beat = now
                    self.tx.send(b"k")
        except Exception:
            log.debug("terminal relay: socket for %s ended", self.sid, exc_info=True)
        finally:
            _ends.discard(self)
            try:
                self.tx.send(b"x")  # the owner detaches now (else after DEAD_AFTER)
            except Exception:  # noqa: S110 - Redis is down: the owner's timeout does it
                pass
            bus.unsubscribe_relay(channel)
            self.stop(1000, "")  # the reader thread ends
            if reader is not None:
                reader.join(timeout=2.0)

    def _credit_written(self) -> None:
        with self.credit_lock:
            if self.browser_acks or self.written <= self.credited:
                return
            n, self.credited = self.written - self.credited, self.written
        self.tx.send(b"a", str(n).encode())

    def _credit_acked(self, n: int) -> None:
        # From the browser's first ack on, its acks are the credit (a byte credited when it
        # was written and acked again only lowers the owner's count, which stops at 0).
        with self.credit_lock:
            self.browser_acks = True
        self.tx.send(b"a", str(n).encode())

    def _read(self) -> None:
        """The socket's frames, as ws._on_frame takes them, go to the owner."""
        ws = self.ws
        try:
            while self.stopped is None:
                msg = ws.receive(timeout=1.0)
                if msg is None:
                    if not ws.connected:
                        break
                    continue
                if len(msg) > INPUT_MAX:
                    refusal = too_big()
                    self.stop(refusal.code, refusal.message, True)
                    return
                if isinstance(msg, (bytes, bytearray)):
                    if msg:
                        self.tx.send(b"d", bytes(msg))
                    continue
                self._control(msg)
        except Exception:
            log.debug("terminal relay: reading the socket for %s ended", self.sid, exc_info=True)
        with self.cond:
            self.cond.notify()  # the main loop sees the socket gone

    def _control(self, msg: str) -> None:
        try:
            control = parse_control(msg, self.sid)
        except Refusal as refusal:
            self.stop(refusal.code, refusal.message, True)
            return
        if control is None:
            return
        kind, value = control
        if kind == "input":
            self.tx.send(b"d", value)
        elif kind == "resize":
            self.tx.send(b"z", f"{value[0]}x{value[1]}".encode())
        elif kind == "ack":
            self._credit_acked(value)
        elif kind == "ping":
            self.tx.send(b"p")
