"""A live terminal: one SSH channel, its ring buffer, at most one attached socket.

`LiveSession` attaches and detaches sockets (a resumed window gets the screen from the
ring buffer, then live output), takes input, resizes, and closes; its output pump is in
pump.py. Input goes straight to the channel from the socket's input thread (ws_input.py),
so Ctrl-C is never queued behind output. Sends on the channel go through
`portal.ssh.chansend` (never after the channel's CLOSE); to the socket only flask-sock's
public `send`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque

import paramiko

from portal import metrics
from portal.ssh.chansend import guard_window, send_request, sendall
from portal.ssh.exec import close_channel
from portal.terminal import pump
from portal.terminal.pump import FRAME_MAX
from portal.terminal.ring import DEFAULT_RING, RingBuffer
from portal.terminal.screenlog import ScreenLog

log = logging.getLogger(__name__)

# An unshared session publishes its output while someone allowed to (its user, an admin)
# watches it: each watcher renews this lease every WATCH_RECHECK (10 s) through the bus.
WATCH_LEASE = 30.0
TAKEOVER_WAIT = 1.0  # seconds a resumed window waits for the old socket's send to end
WINDOW_IGNORED = "the machine ignored SSH flow control (sent more than its window): disconnected"


def cut_socket(client) -> None:
    """Shut the TCP connection under a client's socket: a blocked send there fails at once.
    `client.sock` is the socket the WSGI server handed the request (None: nothing to cut)."""
    try:
        client.sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass


class Client:
    """One attached WebSocket (terminal owner)."""

    __slots__ = ("ws", "send_lock", "unacked", "acks", "kick", "peer", "event", "sock", "notices")

    def __init__(self, ws, peer: str = "", sock: socket.socket | None = None):
        self.ws = ws
        self.sock = sock  # the connection's socket (WSGI environ), only for cut_socket
        self.event = threading.Event()  # wakes the socket's request thread
        self.send_lock = threading.Lock()
        self.unacked = 0
        self.acks = False
        # Set by another thread to end this socket: ("error", message) or ("exit", code, reason).
        self.kick: tuple | None = None
        self.peer = peer
        # The latest control notice for this socket (e.g. the watcher count), set by any
        # thread and sent by the socket's own request thread (take_notice): a slow socket
        # never blocks the bus or the janitor. maxlen 1: only the newest state matters.
        self.notices: deque = deque(maxlen=1)

    def notify(self, msg: dict) -> None:
        self.notices.append(msg)
        self.event.set()

    def take_notice(self) -> dict | None:
        try:
            return self.notices.popleft()
        except IndexError:
            return None

    def send(self, data: bytes | str) -> None:
        with self.send_lock:
            self.ws.send(data)

    def send_json(self, obj: dict) -> None:
        self.send(json.dumps(obj, separators=(",", ":")))

    def wake(self) -> None:
        self.event.set()


class LiveSession:
    """A live terminal in this process."""

    def __init__(
        self,
        registry,
        *,
        sid: str,
        user_id: int,
        machine_id: int,
        agent_id: str,
        channel: paramiko.Channel,
        cols: int,
        rows: int,
        recorder=None,
        shared: bool = False,
        ring_size: int = DEFAULT_RING,
    ):
        self.registry = registry
        self.sid = sid
        self.user_id = user_id
        self.machine_id = machine_id
        self.agent_id = agent_id
        self.channel = channel
        self.cols, self.rows = cols, rows
        self.recorder = recorder
        self.reservation = None  # its place while it was being opened (Registry.reserve)
        self.shared = shared
        self.watched_until = 0.0  # monotonic; see WATCH_LEASE
        # Watch sockets anywhere (their id -> lease end, monotonic): joined with their
        # snapshot request, renewed with their lease, gone on "unwatched" or lease expiry.
        self.watchers: dict[str, float] = {}
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.ring = RingBuffer(ring_size)
        self.client: Client | None = None
        self.status = "active"
        self.closed = False
        self.close_reason: str | None = None
        now = time.monotonic()
        self.detached_at: float | None = None
        self.last_activity = now
        self.bytes_in = 0
        self.bytes_out = 0
        self.flushed = (0, 0)
        # Command lines to log, read off the screen (see screenlog.ScreenLog).
        self.started = now  # the recording's time origin, near enough (commands' offset_ms)
        self.lines = ScreenLog(self._log_lines, cols, rows)
        self._input_lock = threading.Lock()
        self._pump_thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<LiveSession {self.sid} {self.status}>"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._pump_thread = pump.start(self)
        # A machine that ignores the SSH window (issue 16) ends this session and its connection
        # instead of growing the channel's buffer until the worker runs out of memory.
        # Only marked closed before the connection is cut (the flood goes on until then).
        guard_window(self.channel, lambda: self._mark_closed(WINDOW_IGNORED, "error", None))

    def attach(self, client: Client, resumed: bool) -> None:
        """Make `client` the attached socket: `ready`, then (on resume) the screen, then live output."""
        old = None
        with self.cond:
            if self.closed:
                raise RuntimeError("closed")
            old, self.client = self.client, client
            client.send_lock.acquire()  # fresh lock: replay goes out before any live frame
            snapshot = self.ring.snapshot() if resumed else b""
            self.status = "active"
            self.detached_at = None
            self.cond.notify_all()
        try:
            client.ws.send(
                json.dumps({"type": "ready", "session_id": self.sid, "resumed": bool(resumed)})
            )
            for i in range(0, len(snapshot), FRAME_MAX):
                client.ws.send(snapshot[i : i + FRAME_MAX])
        finally:
            client.send_lock.release()
        if self.watchers or self.shared:  # a new window learns who is watching
            client.notify(self.audience())
        if old is not None and old is not client:
            old.kick = ("error", "this terminal was opened in another window")
            old.wake()
            # A send to the old socket can be stuck (a phone that vanished while output was
            # streaming: TCP takes many minutes to give up), and the pump with it: then the
            # resumed window would get its screen and nothing after. Cut that socket.
            if old.send_lock.acquire(timeout=TAKEOVER_WAIT):
                old.send_lock.release()
            else:
                cut_socket(old)
        if resumed:  # a new session's row already says "active"
            self.registry.status_changed(self)

    def detach(self, client: Client) -> None:
        with self.cond:
            if self.client is not client or self.closed:
                return
            self.client = None
            self.status = "detached"
            self.detached_at = time.monotonic()
            self.cond.notify_all()
        self.registry.status_changed(self)

    def close(self, reason: str, *, kind: str = "error", code: int | None = None) -> None:
        """End the session: the SSH channel closes, the socket gets `error` (or `exit`) and closes."""
        finish = self._mark_closed(reason, kind, code)
        if finish is not None:
            finish()

    def _mark_closed(self, reason: str, kind: str, code: int | None):
        """The quick half of `close`: the session is closed from now on (None if it was
        already); returns the rest of the work."""
        with self.cond:
            if self.closed:
                return None
            self.closed = True
            self.status = "closed"
            self.close_reason = reason
            client, self.client = self.client, None
            self.cond.notify_all()
        return lambda: self._finish_close(client, reason, kind, code)

    def _finish_close(self, client, reason: str, kind: str, code: int | None) -> None:
        close_channel(self.channel)
        if client is not None:
            client.kick = ("exit", code, reason) if kind == "exit" else ("error", reason)
            client.wake()
        try:
            self.settle_lines(final=True)
        except Exception:
            log.exception("terminal %s: settling command lines failed", self.sid)
        if self.recorder is not None:
            try:
                self.recorder.close()
            except Exception:
                log.exception("closing recording failed")
        try:
            self.registry.bus.publish_end(self.sid, reason)
        except Exception:
            log.exception("terminal bus: publishing the end of %s failed", self.sid)
        self.registry.ended(self)

    # ------------------------------------------------------------ input side

    def input(self, data: bytes) -> None:
        if not data or self.closed:
            return
        with self._input_lock:
            # Noted before the remote can echo it back; checked once it is on its way.
            self.lines.note_input(data)
            try:
                sendall(self.channel, data)
            except (OSError, EOFError, paramiko.SSHException):
                return
            finally:
                self.check_echo()
            self.bytes_in += len(data)
            metrics.TERMINAL_BYTES_IN.inc(len(data))
            self.last_activity = time.monotonic()

    def can_send(self) -> bool:
        """Does the remote's window have room (at least one byte), so that `input()` of a
        keystroke goes out without waiting for the remote to read?"""
        try:
            return self.channel.send_ready()
        except (OSError, EOFError, paramiko.SSHException):  # pragma: no cover
            return False

    def resize(self, cols: int, rows: int) -> None:
        if self.closed or (cols, rows) == (self.cols, self.rows):
            return
        self.cols, self.rows = cols, rows
        self.lines.resize(cols, rows)
        try:
            if not send_request(self.channel, "window-change", cols, rows, 0, 0):
                return
        except (OSError, EOFError, paramiko.SSHException):
            return
        if self.recorder is not None:
            self.recorder.resize(cols, rows)
        try:  # watchers redraw at the new size
            self.registry.bus.publish_resize(self.sid, cols, rows)
        except Exception:
            log.exception("terminal bus: publishing a resize failed")
        self.registry.status_changed(self)

    def ack(self, client: Client, nbytes: int) -> None:
        pump.ack(self, client, nbytes)

    def set_shared(self, shared: bool) -> None:
        changed = shared != self.shared
        self.shared = shared
        if changed:
            self.tell_audience()

    # ------------------------------------------------------------ watchers

    def audience(self) -> dict:
        """The `watchers` control message: how many watch sockets, and whether it is shared."""
        return {"type": "watchers", "count": len(self.watchers), "shared": bool(self.shared)}

    def tell_audience(self) -> None:
        client = self.client
        if client is not None and not self.closed:
            client.notify(self.audience())

    def watcher_joined(self, wid: str, lease: float = WATCH_LEASE) -> None:
        """A watch socket started (or renewed its lease): count it until it leaves."""
        with self.lock:
            new = wid not in self.watchers
            self.watchers[wid] = time.monotonic() + lease
        if new:
            self.tell_audience()

    def watcher_left(self, wid: str) -> None:
        with self.lock:
            gone = self.watchers.pop(wid, None) is not None
        if gone:
            self.tell_audience()

    def expire_watchers(self, now: float) -> None:
        """Watchers whose lease ran out (their process died without saying so)."""
        if not self.watchers:
            return
        with self.lock:
            stale = [w for w, until in self.watchers.items() if until <= now]
            for w in stale:
                del self.watchers[w]
        if stale:
            self.tell_audience()

    def watched(self, lease: float = WATCH_LEASE) -> None:
        """Someone watches: publish output for `lease` seconds (renewed by the watcher)."""
        self.watched_until = time.monotonic() + lease

    @property
    def broadcasting(self) -> bool:
        """Output goes to the bus: shared, or watched by its user or an admin."""
        return self.shared or time.monotonic() < self.watched_until

    def snapshot(self) -> bytes:
        with self.lock:
            return self.ring.snapshot()

    # ------------------------------------------------------------ command lines

    def _log_lines(self, lines: list[tuple[str, float]]) -> None:
        self.registry.log_commands(
            self, [(text, max(int((at - self.started) * 1000), 0)) for text, at in lines]
        )

    def check_echo(self) -> None:
        """Run the echo check over what was noted (lines go to `emit`, in typing order)."""
        try:
            self.lines.drain()
        except Exception:
            log.exception("terminal %s: echo check failed", self.sid)

    def settle_lines(self, final: bool = False) -> None:
        """Lines whose echo never came are logged as hidden (the janitor, every second)."""
        self.check_echo()  # anything noted but not yet checked counts first
        lines = self.lines.expire(final)
        if lines:
            self.registry.log_commands(self, lines)
