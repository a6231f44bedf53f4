"""The terminal bridge: one SSH channel, one output pump, at most one attached socket.

Output path (one thread per channel, the "pump"): `channel.recv()` returns everything
paramiko has buffered (up to 64 KiB), so output that arrives while a frame is being sent
is coalesced into the next frame and a single echoed keystroke is sent at once. Each frame
goes to the ring buffer, the recorder (queued), the bus (only when shared or watched) and
the attached socket (`ws.send`, blocking: TCP backpressure). A client that acks gets flow
control: above HIGH_WATER unacked bytes the pump stops reading the channel until acks bring
it under LOW_WATER, so the SSH window stops the remote program.

Input path (the socket's input thread, see ws.py): bytes go straight to the channel, so
Ctrl-C is never queued behind output. Only public calls of paramiko's `Channel`
(`recv`, `recv_ready`, `send_ready`, ...) and of flask-sock's socket (`send`) are used;
sends on the channel go through `portal.ssh.chansend` (never after the channel's CLOSE).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import paramiko

from portal.ssh.chansend import send_request, sendall
from portal.ssh.exec import close_channel
from portal.terminal.linelog import EchoGate
from portal.terminal.ring import DEFAULT_RING, RingBuffer

log = logging.getLogger(__name__)

FRAME_MAX = 64 * 1024
COALESCE_FROM = 1024  # a chunk this big means bulk output: wait a little for more
COALESCE_WAIT = 0.003  # seconds
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
COALESCE_POLL = 0.0005  # seconds between looks at the channel while coalescing
# The shell channel's receive window (paramiko's open_channel(window_size=...)): what the
# SSH server may send ahead of what the pump has read. With flow control paused, what
# stands between a Ctrl-C and its prompt is at most HIGH_WATER in flight plus this.
WINDOW = 256 * 1024
# An unshared session publishes its output while someone allowed to (its user, an admin)
# watches it: each watcher renews this lease every WATCH_RECHECK (10 s) through the bus.
WATCH_LEASE = 30.0


TAKEOVER_WAIT = 1.0  # seconds a resumed window waits for the old socket's send to end


def cut_socket(client) -> None:
    """Shut the TCP connection under a client's socket: a blocked send there fails at once.
    `client.sock` is the socket the WSGI server handed the request (None: nothing to cut)."""
    try:
        client.sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass


class Client:
    """One attached WebSocket (terminal owner)."""

    __slots__ = ("ws", "send_lock", "unacked", "acks", "kick", "peer", "event", "sock")

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

    def send(self, data: bytes | str) -> None:
        with self.send_lock:
            self.ws.send(data)

    def send_json(self, obj: dict) -> None:
        self.send(json.dumps(obj, separators=(",", ":")))

    def wake(self) -> None:
        self.event.set()


WINDOW_IGNORED = "the machine ignored SSH flow control (sent more than its window): disconnected"


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
        # Command lines to log: only what the terminal echoed (see linelog.EchoGate).
        self.lines = EchoGate(emit=lambda lines: registry.log_commands(self, lines))
        self._input_lock = threading.Lock()
        self._pump_thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<LiveSession {self.sid} {self.status}>"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._pump_thread = threading.Thread(
            target=self._pump, name=f"terminal-pump-{self.sid[:8]}", daemon=True
        )
        self._pump_thread.start()
        # A machine that ignores the SSH window (issue 16) ends this session and its connection
        # instead of growing the channel's buffer until the worker runs out of memory.
        from portal.ssh.chansend import guard_window

        guard_window(self.channel, lambda: self.close(WINDOW_IGNORED))

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
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.status = "closed"
            self.close_reason = reason
            client, self.client = self.client, None
            self.cond.notify_all()
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
                self._check_echo()
            self.bytes_in += len(data)
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
        with self.cond:
            client.acks = True
            client.unacked = max(0, client.unacked - nbytes)
            if client.unacked <= LOW_WATER:
                self.cond.notify_all()

    def set_shared(self, shared: bool) -> None:
        self.shared = shared

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

    # ------------------------------------------------------------ output side

    def _wait_for_acks(self) -> None:
        with self.cond:
            c = self.client
            if c is None or not c.acks or c.unacked < HIGH_WATER:
                return
            while not self.closed and self.client is c and c.unacked > LOW_WATER:
                self.cond.wait(1.0)

    def _coalesce(self, ch: paramiko.Channel, data: bytes) -> tuple[bytes, bool]:
        """Bulk output (a chunk of COALESCE_FROM bytes or more) waits up to COALESCE_WAIT for
        more, up to FRAME_MAX: a flood goes out as ~64 KiB frames instead of one frame per
        ~4 KiB SSH packet (fewer sends, fewer acks). Small output is only merged with what is
        already buffered, never delayed. Returns (data, eof)."""
        parts, n = [data], len(data)
        bulk = n >= COALESCE_FROM
        deadline = time.monotonic() + COALESCE_WAIT
        eof = False
        try:
            while n < FRAME_MAX:
                if not ch.recv_ready():
                    if ch.closed or ch.eof_received:
                        eof = True
                        break
                    if not bulk or time.monotonic() >= deadline:
                        break
                    # The channel's own timeout is shared with its send side (input), so
                    # the wait for more is a short sleep, not a recv() with a timeout.
                    time.sleep(COALESCE_POLL)
                    continue
                more = ch.recv(FRAME_MAX - n)
                if not more:
                    eof = True
                    break
                parts.append(more)
                n += len(more)
        except (OSError, EOFError, paramiko.SSHException):
            eof = True
        return (b"".join(parts) if len(parts) > 1 else data), eof

    def _pump(self) -> None:
        ch = self.channel
        try:
            while not self.closed:
                self._wait_for_acks()
                if self.closed:
                    break
                try:
                    data = ch.recv(FRAME_MAX)
                except (TimeoutError, OSError, EOFError, paramiko.SSHException):
                    data = b""
                if not data:
                    break
                eof = False
                if len(data) < FRAME_MAX and (len(data) >= COALESCE_FROM or ch.recv_ready()):
                    data, eof = self._coalesce(ch, data)
                self._output(data)
                if eof:
                    break
        except Exception:
            log.exception("terminal %s: output pump failed", self.sid)
        finally:
            if not self.closed:
                code = None
                try:
                    if ch.status_event.wait(1.0):
                        code = ch.exit_status
                except Exception:  # noqa: S110
                    pass
                if code is None or code < 0:
                    # No exit status: an `error`, since the contract's `exit` carries the
                    # shell's integer code. With the connection still up, sshd sent an
                    # exit-signal instead (paramiko does not read it): the shell was killed.
                    t = ch.get_transport()
                    if t is not None and t.is_active():
                        self.close("the shell was killed by a signal")
                    else:
                        self.close("the connection to the machine was lost")
                else:
                    self.close(f"the shell exited with code {code}", kind="exit", code=code)

    def _check_echo(self) -> None:
        """Run the echo check over what was noted (lines go to `emit`, in typing order)."""
        try:
            self.lines.drain()
        except Exception:
            log.exception("terminal %s: echo check failed", self.sid)

    def settle_lines(self, final: bool = False) -> None:
        """Lines whose echo never came are logged as hidden (the janitor, every second)."""
        self._check_echo()  # anything noted but not yet checked counts first
        lines = self.lines.expire(final)
        if lines:
            self.registry.log_commands(self, lines)

    def _output(self, data: bytes) -> None:
        with self.lock:
            self.ring.append(data)
            self.bytes_out += len(data)
            self.last_activity = time.monotonic()
            c = self.client
            if c is not None:
                c.unacked += len(data)
        if self.recorder is not None:
            self.recorder.output(data)
        # Noted (for the command log's echo check) before any client can see it, so its
        # password-prompt guard is never behind the user.
        self.lines.note_output(data)
        if self.broadcasting:
            try:
                self.registry.bus.publish_output(self.sid, data)
            except Exception:
                log.exception("terminal bus: publish failed")
        if c is not None:
            try:
                c.send(data)
            except Exception:
                # The socket is gone: detach; its request thread notices too.
                self.detach(c)
                c.wake()
        self._check_echo()
