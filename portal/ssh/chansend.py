"""Messages on a channel that can never follow the channel's CLOSE.

paramiko checks a channel's state under `channel.lock`, releases the lock, then sends.
Between the two, paramiko's transport thread may handle the server's CHANNEL_CLOSE and
answer it with our own CLOSE; the message sent next then refers to a channel the server
has already freed, and OpenSSH's sshd answers EOF, data or a channel request for a freed
channel by **dropping the whole connection** ("ieof packet referred to nonexistent
channel"). With pooled connections that is every other command and terminal on it: a
command that finished quickly while its EOF was on its way once failed a neighbour's
command with "the connection was lost".

Every message for a channel goes out through `Transport._send_user_message`, which holds
the transport's `clear_to_send_lock` while it writes, and the transport thread marks a
channel closed (under `channel.lock`) *before* it sends the CLOSE. So a message whose
check ("not closed") and write both happen while this thread holds `clear_to_send_lock`
is on the wire before any CLOSE of ours. Lock order: `clear_to_send_lock`, then
`channel.lock` (paramiko never takes them the other way round), and `channel.lock` is not
held during the write, so the transport thread keeps reading while a send blocks.

**Version guard.** The above relies on paramiko internals (and so do `exec_request`, which
must know whether an `exec` request left, and `open_channels`, the count sshd holds against
`MaxSessions`) (`clear_to_send_lock`,
`clear_to_send`, `_send_message`, `Channel._send_eof`, `Channel._wait_for_send_window`),
and `limit_packets` / `guard_window` below on others (`Packetizer.read_all`, the channel's
`in_buffer`/`in_stderr_buffer` pipes and `in_window_size`). They were read against paramiko
`PINNED` (5.1.0) only: on any other version `INTERNALS` is False and every function takes
the public path instead — `shutdown_write()`, `sendall()`, `resize_pty()` (the race above
is back; a `signal` request is not sent at all, paramiko has no public call for it), no
packet-length cap, and a watcher thread that polls the public buffer lengths instead of the
per-packet window check. `tests/test_ssh_limits.py::test_paramiko_is_the_pinned_version` fails
when the installed paramiko differs: re-verify these internals against it, then move
`PINNED`. This is the one module allowed to touch paramiko internals.

**Limits on what a machine may send** (a machine's sshd is whatever its owner runs):
paramiko reads a packet of any announced length (up to 4 GiB) into memory, and buffers
channel data whether or not it fits the window it advertised. `limit_packets(transport)`
refuses packets longer than OpenSSH's own limit (256 KiB; RFC 4253 requires 35000 bytes);
`guard_window(channel, on_exceeded)` caps what a channel holds unread at the window we
granted plus OpenSSH's 10 % grace: more means the peer ignored the window (a protocol
violation), and the channel's data is dropped from then on, `on_exceeded()` runs and the
connection is closed, as OpenSSH does ("peer ignored channel window").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paramiko
from paramiko.common import cMSG_CHANNEL_DATA, cMSG_CHANNEL_REQUEST

__all__ = [
    "INTERNALS",
    "MAX_PACKET",
    "PINNED",
    "channel_request",
    "exec_request",
    "open_channels",
    "guard_window",
    "limit_packets",
    "send_eof",
    "send_request",
    "sendall",
    "window_limit",
]

log = logging.getLogger(__name__)

#: The paramiko release whose internals this module was checked against.
PINNED = "5.1.0"
#: True: the internal paths below; False (another paramiko): the public fallbacks.
INTERNALS = paramiko.__version__ == PINNED


def _hold_clear_to_send(t: paramiko.Transport) -> bool:
    """Acquire `clear_to_send_lock` with no key exchange in progress, as paramiko's
    `_send_user_message` does. False (lock not held) when the transport is gone."""
    start = time.monotonic()
    while True:
        t.clear_to_send.wait(0.1)
        if not t.active:
            return False
        t.clear_to_send_lock.acquire()
        if t.clear_to_send.is_set():
            return True
        t.clear_to_send_lock.release()
        if time.monotonic() > start + t.clear_to_send_timeout:
            raise paramiko.SSHException("Key-exchange timed out waiting for key negotiation")


def send_if_open(
    channel: paramiko.Channel, build: Callable[[paramiko.Channel], paramiko.Message | None]
) -> bool:
    """Send the message `build(channel)` returns (called under `channel.lock`, only while the
    channel is open) unless the channel is closed. True when it was written.
    Pinned paramiko only (`INTERNALS`): the callers below take their public path otherwise."""
    if not INTERNALS:
        raise NotImplementedError(f"send_if_open needs paramiko {PINNED}")
    t = channel.transport
    if t is None or not _hold_clear_to_send(t):
        return False
    try:
        with channel.lock:
            if channel.closed or not channel.active:
                return False
            m = build(channel)
        if m is None:
            return False
        t._send_message(m)
        return True
    finally:
        t.clear_to_send_lock.release()


def send_eof(channel: paramiko.Channel) -> bool:
    """`channel.shutdown_write()`, never after our CLOSE. True when the EOF was sent now."""
    if not INTERNALS:
        if channel.closed:
            return False
        channel.shutdown_write()
        return True
    return send_if_open(channel, lambda ch: ch._send_eof())


def channel_request(
    channel: paramiko.Channel, kind: str, want_reply: bool, *args: str | int
) -> paramiko.Message:
    """An RFC 4254 channel request: strings are sent as strings, ints as uint32."""
    m = paramiko.Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(channel.remote_chanid)
    m.add_string(kind)
    m.add_boolean(want_reply)
    for arg in args:
        if isinstance(arg, int):
            m.add_int(arg)
        else:
            m.add_string(arg)
    return m


def exec_request(channel: paramiko.Channel, command: str) -> bool:
    """Send an `exec` request and wait for the server's answer: paramiko's `exec_command`,
    split so the caller knows whether the request left (a pooled connection that died
    before it is retried once on a fresh one; a request that left is never repeated).

    True: the command started. False: not sent, the connection is dead. Raises
    `paramiko.SSHException` / `EOFError` / `OSError` when the server refused it or the
    connection died after it was sent. On another paramiko (`INTERNALS` False) this is
    `exec_command`: False only when the connection was already dead before sending.
    """
    transport = channel.transport
    if channel.closed or not channel.active or transport is None or not transport.is_active():
        return False
    if not INTERNALS:
        channel.exec_command(command)
        return True
    channel._event_pending()
    try:
        transport._send_user_message(channel_request(channel, "exec", True, command))
    except (EOFError, OSError):
        return False
    channel._wait_for_event()
    return True


def open_channels(transport: paramiko.Transport | None) -> int:
    """Channels open on a transport, counted as sshd counts them against `MaxSessions`
    (paramiko keeps a channel until both sides closed it). On another paramiko: 0, and the
    pool relies on its own reservations and on the server's "administratively prohibited"
    answer, which marks a connection full."""
    if transport is None or not INTERNALS:
        return 0
    return len(transport._channels)


def send_request(channel: paramiko.Channel, kind: str, *args: str | int) -> bool:
    """A channel request without a reply (`signal`, `window-change`) while the channel is open."""
    if not INTERNALS:
        if channel.closed:
            return False
        if kind == "window-change":
            cols, rows, width_px, height_px = args
            try:
                channel.resize_pty(cols, rows, width_px, height_px)
            except paramiko.SSHException:  # "Channel is not open" (EOF received or sent)
                return False
            return True
        return False  # no public call for it
    return send_if_open(channel, lambda ch: channel_request(ch, kind, False, *args))


def sendall(channel: paramiko.Channel, data: bytes) -> None:
    """`channel.sendall(data)` whose packets never follow the channel's CLOSE.

    Takes send window as `Channel._send` does (waiting under `channel.lock` while the
    remote's window is full). Raises OSError once the channel is closed."""
    if not INTERNALS:
        channel.sendall(data)
        return
    view = memoryview(data)
    while view:
        with channel.lock:
            if channel.closed:
                raise OSError("Socket is closed")
            size = channel._wait_for_send_window(len(view))
        if size == 0:
            raise OSError("Socket is closed")
        chunk = bytes(view[:size])

        def build(ch: paramiko.Channel, chunk: bytes = chunk) -> paramiko.Message:
            m = paramiko.Message()
            m.add_byte(cMSG_CHANNEL_DATA)
            m.add_int(ch.remote_chanid)
            m.add_string(chunk)
            return m

        if not send_if_open(channel, build):
            raise OSError("Socket is closed")
        view = view[size:]


# --------------------------------------------------------------------------- limits

#: Longest SSH packet accepted (OpenSSH's PACKET_MAX_SIZE; RFC 4253 6.1 requires 35000).
MAX_PACKET = 256 * 1024
_MAC_MAX = 64  # the longest MAC/tag read with a packet (hmac-sha2-512)


def limit_packets(transport: paramiko.Transport) -> bool:
    """Refuse received packets longer than MAX_PACKET (an SSHException in the transport's
    thread: the connection ends) instead of reading them into memory. Call before
    `start_client`. False when not installed (another paramiko)."""
    if not INTERNALS:
        return False
    pk = transport.packetizer
    read_all = pk.read_all  # Packetizer.read_message reads each packet's rest with it

    def capped(n: int, check_rekey: bool = False) -> bytes:
        if n > MAX_PACKET + _MAC_MAX:
            raise paramiko.SSHException(f"packet too long ({n} bytes, limit {MAX_PACKET})")
        return read_all(n, check_rekey)

    pk.read_all = capped
    return True


def window_limit(channel: paramiko.Channel) -> int:
    """Unread bytes a channel may hold: the receive window granted (what paramiko
    advertised; it only grants more as the buffer is read) plus 10 % and one packet."""
    window = max(int(channel.in_window_size), 1)
    return window + window // 10 + max(int(channel.in_max_packet_size), 35000)


def _buffered(channel: paramiko.Channel) -> int:
    return len(channel.in_buffer) + len(channel.in_stderr_buffer)


def _exceeded(channel: paramiko.Channel, on_exceeded: Callable[[], object]) -> None:
    """The peer ignored the window: `on_exceeded()`, then close the connection (in a thread
    of its own: never blocks paramiko's transport thread). `on_exceeded` should be quick (the
    peer goes on flooding until the connection is closed): if it returns a callable, that
    runs after the close, for the slower rest of the work."""
    transport = channel.get_transport()
    log.warning(
        "ssh: the server sent more on channel %s than its window allows (limit %d bytes): "
        "closing the connection",
        channel.get_id(),
        window_limit(channel),
    )

    def end() -> None:
        then = None
        try:
            then = on_exceeded()
        except Exception:
            log.exception("ssh: window-exceeded handler failed")
        finally:
            if transport is not None:
                transport.close()
        if callable(then):
            try:
                then()
            except Exception:
                log.exception("ssh: window-exceeded handler failed")

    threading.Thread(target=end, name="ssh-window-exceeded", daemon=True).start()


def guard_window(channel: paramiko.Channel, on_exceeded: Callable[[], object]) -> None:
    """Cap what `channel` holds unread at `window_limit(channel)` (see the module's doc).

    Pinned paramiko: every data packet is checked as paramiko's transport thread hands it
    to the channel's pipes (stdout and stderr; call after any pipe is replaced), so the
    buffer never exceeds the limit; past it, data is dropped. Another paramiko: a watcher
    thread polls the public buffer lengths (`len(channel.in_buffer)`) every 0.1 s.
    """
    limit = window_limit(channel)
    if not INTERNALS:
        _Watcher.add(channel, limit, on_exceeded)
        return
    out, err = channel.in_buffer, channel.in_stderr_buffer
    tripped = False

    def guarded(feed: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def feed_checked(data: bytes) -> None:
            nonlocal tripped
            if tripped:
                return
            if len(out) + len(err) + len(data) > limit:
                tripped = True
                _exceeded(channel, on_exceeded)
                return
            feed(data)

        return feed_checked

    out.feed = guarded(out.feed)
    err.feed = guarded(err.feed)


class _Watcher:
    """Another paramiko's fallback for `guard_window`: one thread for all guarded channels
    (while there are any), polling their buffered bytes (public: the pipes' lengths)."""

    INTERVAL = 0.1
    _lock = threading.Lock()
    _watched: dict = {}  # channel -> (limit, on_exceeded); dropped once closed
    _thread: threading.Thread | None = None

    @classmethod
    def add(cls, channel: paramiko.Channel, limit: int, on_exceeded: Callable[[], object]) -> None:
        with cls._lock:
            cls._watched[channel] = (limit, on_exceeded)
            if cls._thread is None:
                cls._thread = threading.Thread(
                    target=cls._run, name="ssh-window-watch", daemon=True
                )
                cls._thread.start()

    @classmethod
    def _run(cls) -> None:
        while True:
            time.sleep(cls.INTERVAL)
            with cls._lock:
                if not cls._watched:
                    cls._thread = None
                    return
                items = list(cls._watched.items())
            for channel, (limit, on_exceeded) in items:
                over = not channel.closed and _buffered(channel) > limit
                if channel.closed or over:
                    with cls._lock:
                        cls._watched.pop(channel, None)
                if over:
                    _exceeded(channel, on_exceeded)
