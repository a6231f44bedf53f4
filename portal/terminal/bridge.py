"""The terminal bridge: one SSH channel, one output pump, at most one attached socket.

Output path (one thread per channel, the "pump"): `channel.recv()` returns
everything buffered (up to 64 KiB), so output that arrives while a frame is
being sent is coalesced into the next frame and a single echoed keystroke is
sent at once. Each frame goes to the ring buffer, the recorder (queued), the
bus (only when shared or watched) and the attached socket (blocking send: TCP
backpressure). A client that acks gets flow control: above HIGH_WATER unacked
bytes the pump stops reading the channel until acks bring it under LOW_WATER,
so the SSH window (withheld down to 256 KiB then, see `_set_window`) stops the remote program.

Input path (the socket's request thread): bytes go straight to the channel, so
Ctrl-C is never queued behind output.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import paramiko
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST

from portal.ssh.chansend import send_request
from portal.ssh.exec import close_channel
from portal.ssh.fastpath import send_data
from portal.terminal.linelog import EchoGate
from portal.terminal.ring import DEFAULT_RING, RingBuffer

log = logging.getLogger(__name__)

FRAME_MAX = 64 * 1024
COALESCE_FROM = 1024  # a chunk this big means bulk output: wait a little for more
COALESCE_WAIT = 0.003  # seconds
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
# Remote output the portal lets the SSH server send ahead of what it has read.
# The SSH receive window: paramiko's 2 MiB while the client keeps up (full throughput);
# while flow control is pausing the pump (a slow client), credit is withheld down to
# WINDOW_SLOW, so what sits between a Ctrl-C and its prompt stays small.
WINDOW_FAST = 2 * 1024 * 1024
WINDOW_SLOW = 256 * 1024
WINDOW_STEP = 64 * 1024  # credit is returned in steps of this (must be < WINDOW_SLOW)
SLOW_FOR = 1.0  # seconds after the last flow-control pause before the window opens again
# An unshared session publishes its output while someone allowed to (its user, an admin)
# watches it: each watcher renews this lease every WATCH_RECHECK (10 s) through the bus.
WATCH_LEASE = 30.0


def _set_window(channel: paramiko.Channel, target: int, current: int) -> int:
    """Move the channel's effective receive window from `current` to `target` bytes.

    Credit already granted cannot be taken back, so shrinking withholds the difference from
    the next window-adjusts (paramiko returns `in_window_sofar` once it passes the
    threshold); growing gives it back with the next one. Returns the new window.
    """
    try:
        with channel.lock:
            channel.in_window_sofar += target - current
            channel.in_window_size = target
            channel.in_window_threshold = WINDOW_STEP
        return target
    except AttributeError:  # pragma: no cover - paramiko internals changed
        return current


# Output up to this size (an echo, a short prompt) may be sent by paramiko's transport thread
# itself. Bulk output arrives in ~4 KiB packets and always goes through the pump (coalescing).
DIRECT_MAX = 256


class DirectPipe(BufferedPipe):
    """The channel's input buffer, with a fast path for small interactive output.

    paramiko's transport thread feeds every data packet here. When the pump is idle (nothing
    buffered, nothing being sent), a small packet is written to the socket right away from
    the transport thread with a non-blocking send; otherwise (or if the socket would block)
    it is buffered for the pump as usual. `busy` is set, under the pipe's lock, when the pump
    takes data and when the fast path starts, so output is never reordered.
    """

    def __init__(self):
        super().__init__()
        self.owner: LiveSession | None = None
        self.busy = False

    def feed(self, data):
        owner = self.owner
        if owner is None:
            super().feed(data)
            return
        # Every byte of output passes here once and is noted for the command log's echo
        # check before any client can see it (so its password-prompt guard is never behind
        # the user); the check itself runs once the bytes are on their way: here after a
        # direct send, in the pump (per frame, not per packet) for buffered output.
        owner.lines.note_output(data)
        if len(data) <= DIRECT_MAX:
            with self._lock:
                go = not self.busy and len(self._buffer) == 0 and not self._closed
                if go:
                    self.busy = True
            if go:
                try:
                    sent = owner._send_direct(data)
                except Exception:
                    log.exception("terminal: direct send failed")
                    sent = False
                with self._lock:
                    self.busy = False
                if sent:
                    owner._check_echo()
                    return
        super().feed(data)

    def read(self, nbytes, timeout=None):
        # BufferedPipe.read, plus `busy` set atomically with taking the data.
        with self._lock:
            if len(self._buffer) == 0:
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                while len(self._buffer) == 0 and not self._closed:
                    then = time.time()
                    self._cv.wait(timeout)
                    if timeout is not None:
                        timeout -= time.time() - then
                        if timeout <= 0.0:
                            raise PipeTimeout()
            if len(self._buffer) <= nbytes:
                out = self._buffer_tobytes()
                del self._buffer[:]
                if self._event is not None and not self._closed:
                    self._event.clear()
            else:
                out = self._buffer_tobytes(nbytes)
                del self._buffer[:nbytes]
            if out:
                self.busy = True
            return out

    def wait_data(self, timeout: float) -> bool:
        """Wait up to `timeout` s for buffered data (or close); True if there is some."""
        with self._lock:
            if len(self._buffer) == 0 and not self._closed:
                self._cv.wait(timeout)
            return len(self._buffer) > 0

    def done(self) -> None:
        with self._lock:
            self.busy = False


def prepare_channel(channel: paramiko.Channel) -> None:
    """Before the shell starts: the fast-path input buffer and the smaller SSH window."""
    pipe = DirectPipe()
    with channel.lock:
        old = channel.in_buffer
        pending = old.empty()
        if pending:
            pipe.feed(pending)
        channel.in_buffer = pipe
        channel.in_window_threshold = WINDOW_STEP


TAKEOVER_WAIT = 1.0  # seconds a resumed window waits for the old socket's send to end


def cut_socket(client) -> None:
    """Shut the TCP connection under a client's socket: a blocked send there fails at once."""
    try:
        client.ws.sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass


def _finish_frame(raw: socket.socket, rest: bytes, *locks) -> None:
    """Send the rest of a started frame (blocking: TCP backpressure), then release `locks`
    (taken by the thread that started the frame)."""
    try:
        raw.sendall(rest)
    except OSError:
        pass  # the socket is gone: the pump or the request thread notices and detaches
    finally:
        for lock in locks:
            lock.release()


class Client:
    """One attached WebSocket (terminal owner)."""

    __slots__ = ("ws", "send_lock", "unacked", "acks", "kick", "peer", "event", "raw", "raw_lock")

    def __init__(self, ws, peer: str = ""):
        self.ws = ws
        # The plain socket under ws._SockProxy and the proxy's frame lock, for the echo
        # fast path (LiveSession._send_direct); None when the socket is something else.
        proxy = getattr(ws, "sock", None)
        raw, lock = getattr(proxy, "_sock", None), getattr(proxy, "_lock", None)
        ok = type(raw) is socket.socket and lock is not None
        self.raw, self.raw_lock = (raw, lock) if ok else (None, None)
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
        try:
            granted = int(channel.in_window_size)
        except (AttributeError, TypeError, ValueError):  # pragma: no cover
            granted = WINDOW_FAST
        self._window = _set_window(channel, WINDOW_FAST, granted)
        self._last_pause = 0.0
        pipe = getattr(channel, "in_buffer", None)
        self._pipe = pipe if isinstance(pipe, DirectPipe) else None

    def __repr__(self) -> str:
        return f"<LiveSession {self.sid} {self.status}>"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._pipe is not None:
            self._pipe.owner = self  # fast path on: a client is attached by now
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
                send_data(self.channel, data)
            except (OSError, EOFError, paramiko.SSHException):
                return
            finally:
                self._check_echo()
            self.bytes_in += len(data)
            self.last_activity = time.monotonic()

    def can_send(self, n: int) -> bool:
        """Would `input()` of n bytes go out without waiting for the remote's window?"""
        try:
            return self.channel.out_window_size >= n
        except AttributeError:  # pragma: no cover
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
            self._last_pause = time.monotonic()
            if self._window != WINDOW_SLOW:
                self._window = _set_window(self.channel, WINDOW_SLOW, self._window)
            while not self.closed and self.client is c and c.unacked > LOW_WATER:
                self.cond.wait(1.0)
            self._last_pause = time.monotonic()

    def _coalesce(self, ch: paramiko.Channel, data: bytes) -> tuple[bytes, bool]:
        """Bulk output (a chunk of COALESCE_FROM bytes or more) waits up to COALESCE_WAIT for
        more, up to FRAME_MAX: a flood goes out as ~64 KiB frames instead of one frame per
        ~4 KiB SSH packet (fewer sends, fewer acks). Small output is only merged with what is
        already buffered, never delayed. Returns (data, eof)."""
        parts, n = [data], len(data)
        bulk = n >= COALESCE_FROM and self._pipe is not None
        deadline = time.monotonic() + COALESCE_WAIT
        eof = False
        try:
            while n < FRAME_MAX:
                if not ch.recv_ready():
                    if ch.closed or ch.eof_received:
                        eof = True
                        break
                    left = deadline - time.monotonic()
                    if not bulk or left <= 0 or not self._pipe.wait_data(left):
                        break
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
                if self._window != WINDOW_FAST and time.monotonic() - self._last_pause > SLOW_FOR:
                    self._window = _set_window(ch, WINDOW_FAST, self._window)
                try:
                    data = ch.recv(FRAME_MAX)
                except (TimeoutError, OSError, EOFError, paramiko.SSHException):
                    data = b""
                if not data:
                    break
                eof = False
                if len(data) < FRAME_MAX and (len(data) >= COALESCE_FROM or ch.recv_ready()):
                    data, eof = self._coalesce(ch, data)
                try:
                    self._output(data)
                finally:
                    if self._pipe is not None:
                        self._pipe.done()
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

    def _send_direct(self, data: bytes) -> bool:
        """From paramiko's transport thread: send small output now if nothing can block.

        Never waits: the socket's locks are only tried, the send is MSG_DONTWAIT. False means
        "buffer it for the pump" (no client, flow control paused, shared, socket busy/full).
        """
        c = self.client
        if c is None or self.closed or (c.acks and c.unacked >= HIGH_WATER):
            return False
        raw, plock = c.raw, c.raw_lock
        if raw is None or self.shared or (self.watched_until and self.broadcasting):
            return False
        if not c.send_lock.acquire(blocking=False):
            return False
        handed = False  # True: _finish_frame releases the locks
        try:
            if not plock.acquire(blocking=False):
                return False
            try:
                n = len(data)
                head = bytes((0x82, n)) if n < 126 else bytes((0x82, 126)) + n.to_bytes(2, "big")
                frame = head + data
                try:
                    sent = raw.send(frame, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    return False
                except OSError:
                    return False  # the pump will find the socket gone and detach
                if sent < len(frame):
                    # Rare (the client's socket is nearly full): the rest of this frame must
                    # go next, but this thread carries other sessions' output too. Another
                    # thread sends it and then releases both locks (frames stay in order).
                    threading.Thread(
                        target=_finish_frame,
                        args=(raw, frame[sent:], plock, c.send_lock),
                        name=f"terminal-finish-{self.sid[:8]}",
                        daemon=True,
                    ).start()
                    handed = True
            finally:
                if not handed:
                    plock.release()
        finally:
            if not handed:
                c.send_lock.release()
        with self.lock:
            self.ring.append(data)
            self.bytes_out += n
            self.last_activity = time.monotonic()
            if self.client is c:
                c.unacked += n
        if self.recorder is not None:
            self.recorder.output(data)
        self._return_window(n)
        return True

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

    def _return_window(self, n: int) -> None:
        """Window credit for bytes that skipped channel.recv() (sent from the transport
        thread, which may send messages itself except during a key exchange)."""
        ch = self.channel
        t = ch.transport
        with ch.lock:
            if ch.closed or ch.eof_received or not ch.active:
                return
            ch.in_window_sofar += n
            if ch.in_window_sofar <= ch.in_window_threshold or not t.clear_to_send.is_set():
                return
            out = ch.in_window_sofar
            ch.in_window_sofar = 0
        m = paramiko.Message()
        m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
        m.add_int(ch.remote_chanid)
        m.add_int(out)
        t._send_message(m)

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
        if self._pipe is None:  # else DirectPipe.feed noted it already
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
