"""The output pump: one thread per SSH channel, from the channel to everyone who reads it.

`channel.recv()` returns everything paramiko has buffered (up to 64 KiB), so output that
arrives while a frame is being sent is coalesced into the next frame and a single echoed
keystroke is sent at once. Each frame goes to the ring buffer, the recorder (queued), the
bus (only when shared or watched) and the attached socket (`ws.send`, blocking: TCP
backpressure). A client that acks gets flow control: above HIGH_WATER unacked bytes the pump
stops reading the channel until acks bring it under LOW_WATER, so the SSH window stops the
remote program. Only public calls of paramiko's `Channel` are used.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time

import paramiko

from portal import metrics

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


def start(sess) -> threading.Thread:
    """Start the pump of a live session (live.LiveSession) in a thread of its own."""
    # In the opening request's context: its request id stays on the pump's log lines.
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(run, sess),
        name=f"terminal-pump-{sess.sid[:8]}",
        daemon=True,
    )
    thread.start()
    return thread


def ack(sess, client, nbytes: int) -> None:
    """The client has rendered `nbytes` more bytes: from its first ack on, it is flow-controlled."""
    with sess.cond:
        client.acks = True
        client.unacked = max(0, client.unacked - nbytes)
        if client.unacked <= LOW_WATER:
            sess.cond.notify_all()


def run(sess) -> None:
    """Read the channel until it ends, then close the session with the reason."""
    ch = sess.channel
    try:
        while not sess.closed:
            _wait_for_acks(sess)
            if sess.closed:
                break
            try:
                data = ch.recv(FRAME_MAX)
            except (TimeoutError, OSError, EOFError, paramiko.SSHException):
                data = b""
            if not data:
                break
            eof = False
            if len(data) < FRAME_MAX and (len(data) >= COALESCE_FROM or ch.recv_ready()):
                data, eof = coalesce(ch, data)
            _output(sess, data)
            if eof:
                break
    except Exception:
        log.exception("terminal %s: output pump failed", sess.sid)
    finally:
        if not sess.closed:
            _end(sess, ch)


def coalesce(ch: paramiko.Channel, data: bytes) -> tuple[bytes, bool]:
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


def _wait_for_acks(sess) -> None:
    with sess.cond:
        c = sess.client
        if c is None or not c.acks or c.unacked < HIGH_WATER:
            return
        while not sess.closed and sess.client is c and c.unacked > LOW_WATER:
            sess.cond.wait(1.0)


def _output(sess, data: bytes) -> None:
    with sess.lock:
        sess.ring.append(data)
        sess.bytes_out += len(data)
        metrics.TERMINAL_BYTES_OUT.inc(len(data))
        sess.last_activity = time.monotonic()
        c = sess.client
        if c is not None:
            c.unacked += len(data)
    if sess.recorder is not None:
        sess.recorder.output(data)
    # Noted (for the command log's echo check) before any client can see it, so its
    # password-prompt guard is never behind the user.
    sess.lines.note_output(data)
    if sess.broadcasting:
        try:
            sess.registry.bus.publish_output(sess.sid, data)
        except Exception:
            log.exception("terminal bus: publish failed")
    if c is not None:
        try:
            c.send(data)
        except Exception:
            # The socket is gone: detach; its request thread notices too.
            sess.detach(c)
            c.wake()
    sess.check_echo()


def _end(sess, ch: paramiko.Channel) -> None:
    """The channel ended: `exit` with the shell's code, else an `error` saying why."""
    code = None
    try:
        if ch.status_event.wait(1.0):
            code = ch.exit_status
    except Exception:  # noqa: S110
        pass
    if code is None or code < 0:
        # No exit status: an `error`, since the contract's `exit` carries the shell's
        # integer code. With the connection still up, sshd sent an exit-signal instead
        # (paramiko does not read it): the shell was killed.
        t = ch.get_transport()
        if t is not None and t.is_active():
            sess.close("the shell was killed by a signal")
        else:
            sess.close("the connection to the machine was lost")
    else:
        sess.close(f"the shell exited with code {code}", kind="exit", code=code)
