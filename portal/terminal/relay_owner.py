"""The owner's side of a relayed re-attach (see relay.py): a signed `relay` request from the
bus attaches a remote client to a session held here, whose frames come and go over the bus."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import deque

from portal.terminal import opening, signing
from portal.terminal.live import Client
from portal.terminal.relay import (
    ATTACH_MAX_AGE,
    DEAD_AFTER,
    IN_QUEUE_MAX,
)

log = logging.getLogger(__name__)

_taken: dict[str, float] = {}  # attachment ids already taken, until their requests expire
_taken_lock = threading.Lock()


def _take_once(aid: str) -> bool:
    now = time.monotonic()
    with _taken_lock:
        for old in [a for a, until in _taken.items() if until < now]:
            del _taken[old]
        if aid in _taken:
            return False
        _taken[aid] = now + 2 * ATTACH_MAX_AGE + 5
        return True


def on_request(reg, msg: dict) -> None:
    """A `relay` request from the bus (in the bus's thread): checked, then served by a
    thread of its own if this process holds the session (or is the one its row names)."""
    sid, aid = msg.get("sid"), msg.get("aid")
    if not isinstance(sid, str) or not isinstance(aid, str) or not 16 <= len(aid) <= 64:
        return
    sess = reg.get(sid)
    if sess is None and msg.get("server") != reg.server_id:
        return  # another process's session
    key = signing.relay_key(reg.app)
    sig = msg.get("sig")
    if not isinstance(sig, str) or not hmac.compare_digest(sig, signing.attach_mac(key, msg)):
        log.warning("terminal relay: an unsigned or forged attach request for %s ignored", sid)
        return
    ts = msg.get("ts")
    if type(ts) is not int or abs(time.time() - ts) > ATTACH_MAX_AGE:
        log.warning("terminal relay: a stale attach request for %s ignored", sid)
        return
    if not _take_once(aid):
        log.warning("terminal relay: a replayed attach request for %s ignored", sid)
        return
    threading.Thread(
        target=_serve_owner,
        args=(reg, sess, msg, key),
        name=f"terminal-relay-{sid[:8]}",
        daemon=True,
    ).start()


class _RemoteSocket:
    """What the session sends to a relayed client goes to the attachment's channel."""

    connected = True

    def __init__(self, out: signing.Sender):
        self.out = out

    def send(self, data) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            self.out.send(b"b", bytes(data))
        else:
            self.out.send(b"t", str(data).encode())


def _serve_owner(reg, sess, msg: dict, key: bytes) -> None:
    sid, aid, uid, tv = msg["sid"], msg["aid"], msg.get("user_id"), msg.get("tv")
    out = signing.Sender(reg.bus, key, f"{aid}:o")
    try:
        if sess is None or sess.closed:
            out.send(b"e", signing.to_json({"type": "error", "message": "that session has ended"}))
            if sess is None:  # the row names this process, which lost it: nobody else can close it
                reg.on_control(
                    {"op": "close", "sid": sid, "reason": "its server no longer held it"}
                )
            return
        if type(uid) is not int or type(tv) is not int or uid != sess.user_id:
            why = "no such session"
        else:
            with reg.app.app_context():
                why = opening.denied_now(uid, tv, sess.machine_id)
        if why:
            log.warning("terminal relay: attach to %s refused: %s", sid, why)
            out.send(b"e", signing.to_json({"type": "error", "message": why}))
            return
    except Exception:
        log.exception("terminal relay: checking an attach request for %s failed", sid)
        return
    _OwnerLink(reg, sess, msg, key, out).run()


class _OwnerLink:
    """A relayed client of a session held here: frames from the bus in, output out."""

    def __init__(self, reg, sess, msg: dict, key: bytes, out: signing.Sender):
        self.reg, self.sess, self.out = reg, sess, out
        self.aid = msg["aid"]
        self.cols, self.rows = msg.get("cols"), msg.get("rows")
        self.rx = signing.Receiver(key, f"{self.aid}:i")
        self.client = Client(_RemoteSocket(out), str(msg.get("peer") or "")[:64])
        self.client.acks = True  # the relay credits what it wrote when the browser does not ack
        self.lock = threading.Lock()
        self.inbox: deque[tuple[bytes, bytes]] = deque()
        self.size = 0
        self.heard = time.monotonic()

    def on_frame(self, data: bytes) -> None:  # the bus's thread: never blocks on the channel
        got = self.rx.open(data)
        if got is None:
            return
        kind, payload = got
        self.heard = time.monotonic()
        c = self.client
        if kind == b"a":
            try:
                n = int(payload)
            except ValueError:
                return
            if n >= 0:
                self.sess.ack(c, n)
        elif kind == b"k":
            try:
                self.out.send(b"k")
            except Exception:  # noqa: S110 - the link notices it is gone
                pass
        elif kind in (b"d", b"z", b"p", b"x"):
            with self.lock:
                if self.size + len(payload) > IN_QUEUE_MAX:
                    c.kick = ("error", "too much input is waiting for the remote program")
                else:
                    self.inbox.append((kind, payload))
                    self.size += len(payload)
            c.wake()

    def run(self) -> None:
        sess, c, bus = self.sess, self.client, self.reg.bus
        channel = f"{self.aid}:i"
        bus.subscribe_relay(channel, self.on_frame)  # before `ready`: no input is missed
        try:
            cols, rows = self.cols, self.rows
            if type(cols) is int and type(rows) is int and 1 <= cols <= 1000 and 1 <= rows <= 1000:
                sess.resize(cols, rows)
            try:
                sess.attach(c, True)
            except Exception:
                self.out.send(
                    b"e", signing.to_json({"type": "error", "message": "the session has ended"})
                )
                return
            log.info("terminal: re-attach to %s relayed (attachment %s)", sess.sid, self.aid[:8])
            while True:
                c.event.clear()
                kick = c.kick
                if kick is not None:
                    if kick[0] == "exit":
                        last = {"type": "exit", "code": kick[1], "reason": kick[2]}
                    else:
                        last = {"type": "error", "message": kick[1]}
                    self.out.send(b"e", signing.to_json(last))
                    return
                notice = c.take_notice()
                if notice is not None:  # e.g. the watcher count
                    c.send_json(notice)
                with self.lock:
                    items = list(self.inbox)
                    self.inbox.clear()
                    self.size = 0
                for kind, payload in items:
                    if kind == b"d":
                        sess.input(payload)
                    elif kind == b"z":
                        try:
                            cols, rows = (int(x) for x in payload.split(b"x", 1))
                        except ValueError:
                            continue
                        if 1 <= cols <= 1000 and 1 <= rows <= 1000:
                            sess.resize(cols, rows)
                    elif kind == b"p":
                        self.out.send(b"t", b'{"type":"pong"}')
                    elif kind == b"x":
                        return  # the socket is gone: the grace period starts
                if time.monotonic() - self.heard > DEAD_AFTER:
                    log.warning("terminal relay: attachment %s went quiet", self.aid[:8])
                    return
                if not items:
                    c.event.wait(1.0)
        except Exception:
            log.exception("terminal relay: serving attachment %s failed", self.aid[:8])
        finally:
            bus.unsubscribe_relay(channel)
            sess.detach(c)
