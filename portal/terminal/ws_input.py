"""The terminal socket's frames: taken off the socket, checked, handed to the live session.

The receiver thread (`Receiver`) loops on flask-sock's `ws.receive()` from the upgrade on;
`on_frame` handles input, resize, ack and ping (DESIGN.md, "Terminal socket contract");
input the SSH window has no room for waits in the `InputFeeder`, bounded.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque

from portal.terminal.live import Client, cut_socket
from portal.terminal.ws_common import (
    CLOSE_POLICY,
    INPUT_MAX,
    Refusal,
    parse_control,
    refuse,
    too_big,
)

log = logging.getLogger(__name__)

INPUT_BACKLOG = 256  # frames waiting for the session before the socket stops reading
INPUT_BACKLOG_BYTES = 1024 * 1024  # and bytes: past either, the reader stops taking input


class Receiver:
    """Takes the client's frames off the socket (flask-sock's `ws.receive()`) in a thread of
    its own, from the upgrade on, and hands them to the terminal's frame handler.

    Until the session is set up (the SSH handshake runs in the request thread meanwhile),
    frames wait here, at most INPUT_BACKLOG frames and INPUT_BACKLOG_BYTES bytes; past
    either, or for a frame over INPUT_MAX, the socket is closed (1008, 1009) and the
    connection cut, rather than let input pile up. A frame the handler refuses (Refusal)
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
        # In the socket request's context: its request id stays on this thread's log lines.
        self.thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._run,),
            name="terminal-input",
            daemon=True,
        )
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
                    self._refuse(too_big())
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
            self._refuse(Refusal(CLOSE_POLICY, "too much input before the terminal was ready"))
            return False
        self.pending.append(msg)
        self.pending_bytes += len(msg)
        return True

    def _handle(self, handler, msg) -> bool:
        try:
            handler(msg)
            return True
        except Refusal as refusal:
            self._refuse(refusal)
        except Exception:
            log.exception("terminal: handling a frame failed")
            return True
        return False

    def _refuse(self, refusal: Refusal) -> None:
        client = self.client
        if client.kick is None:
            client.kick = ("refused", refusal.message)
        self.stopped = True
        with client.send_lock:
            refuse(client.ws, refusal.message, refusal.code)
            # The socket library reads on for as long as the client sends (it has no way to
            # stop taking bytes), so a client refused for its input is cut off here, right
            # after the close frame (nothing of ours can follow it): what it sends next is
            # refused by the kernel.
            cut_socket(client)
        client.wake()


class InputFeeder:
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
                    raise Refusal(
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


def on_frame(sess, client: Client, feeder: InputFeeder, msg) -> None:
    if client.kick is not None:
        return
    if isinstance(msg, (bytes, bytearray)):
        feeder.feed(bytes(msg))
        return
    control = parse_control(msg, sess.sid)
    if control is None:
        return
    kind, value = control
    if kind == "input":
        feeder.feed(value)
    elif kind == "resize":
        sess.resize(*value)
    elif kind == "ack":
        sess.ack(client, value)
    elif kind == "ping":
        try:
            client.send_json({"type": "pong"})
        except Exception:  # noqa: S110 - the socket is going away
            pass
