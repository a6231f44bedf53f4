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
"""

from __future__ import annotations

import time
from collections.abc import Callable

import paramiko
from paramiko.common import cMSG_CHANNEL_DATA, cMSG_CHANNEL_REQUEST

__all__ = ["channel_request", "send_eof", "send_if_open", "send_request", "sendall"]


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
    channel is open) unless the channel is closed. True when it was written."""
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


def send_request(channel: paramiko.Channel, kind: str, *args: str | int) -> bool:
    """A channel request without a reply (`signal`, `window-change`) while the channel is open."""
    return send_if_open(channel, lambda ch: channel_request(ch, kind, False, *args))


def sendall(channel: paramiko.Channel, data: bytes) -> None:
    """`channel.sendall(data)` whose packets never follow the channel's CLOSE.

    Takes send window as `Channel._send` does (waiting under `channel.lock` while the
    remote's window is full). Raises OSError once the channel is closed."""
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
