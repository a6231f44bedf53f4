"""Run one command on a machine and collect its result."""

from __future__ import annotations

import codecs
import logging
import select
import time
from dataclasses import dataclass

import paramiko

from portal.errors import ValidationError
from portal.ssh.chansend import exec_request, send_eof, send_request
from portal.ssh.connect import unreachable
from portal.ssh.errors import CommandTimeout
from portal.ssh.pool import ConnectionPool, get_pool
from portal.ssh.target import Target

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_OUTPUT", "ExecResult", "close_channel", "run", "send_signal"]

DEFAULT_MAX_OUTPUT = 1024 * 1024
_READ_SIZE = 64 * 1024
_MAX_WAIT = 0.25  # seconds; see _pump


@dataclass(frozen=True)
class ExecResult:
    """The outcome of `run()`.

    `exit_code` is the remote exit status, or -1 when the process ended without
    one (killed by a signal). `stdout`/`stderr` are decoded as UTF-8 (invalid bytes
    replaced), each capped at `max_output` bytes; `truncated` is true when either
    was cut. `duration_ms` covers channel open to exit status.
    """

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: int
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class _Capped:
    """Keeps the first `limit` bytes of a stream, counts and drops the rest."""

    __slots__ = ("parts", "size", "limit", "truncated")

    def __init__(self, limit: int):
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.truncated = False

    def add(self, data: bytes) -> None:
        room = self.limit - self.size
        if room > 0:
            kept = data[:room]
            self.parts.append(kept)
            self.size += len(kept)
        if len(data) > max(room, 0):
            self.truncated = True

    def text(self) -> str:
        data = b"".join(self.parts)
        # A cut may split a UTF-8 sequence: drop the incomplete tail instead of showing U+FFFD.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return decoder.decode(data, final=not self.truncated)


def close_channel(channel: paramiko.Channel | None) -> None:
    """Close a channel, never raising: on a transport that died under it, paramiko's
    `Channel.close()` raises EOFError/OSError while trying to send the CLOSE message,
    and a channel on a dead transport is gone either way."""
    if channel is None:
        return
    try:
        channel.close()
    except (paramiko.SSHException, EOFError, OSError):
        pass


def send_signal(channel: paramiko.Channel, name: str) -> None:
    """Send an RFC 4254 `signal` request ("HUP", "TERM", "INT", "KILL"...) to the remote process.

    OpenSSH's sshd (7.9+) delivers it to the session's process group; paramiko
    has no public API for it, so the request is built here.
    """
    try:
        send_request(channel, "signal", name)  # never after our CLOSE (see chansend)
    except (paramiko.SSHException, OSError, EOFError):
        pass


def run(
    target: Target,
    command: str,
    timeout: float = 30,
    max_output: int = DEFAULT_MAX_OUTPUT,
    pool: ConnectionPool | None = None,
) -> ExecResult:
    """Run `command` (a string for the remote user's shell) on `target`.

    Uses a pooled connection: a warm call costs one channel open, no handshake.
    stdin is closed at once (a command reading it sees EOF). stdout and stderr are
    read together, so a command that fills one while we wait on the other cannot
    deadlock; past `max_output` bytes a stream is still read and discarded so the
    remote side never blocks.

    On timeout the remote process group gets SIGHUP then SIGTERM, the channel is
    closed, and `CommandTimeout` is raised. Connection problems raise
    MachineUnreachable / AuthenticationFailed / HostKeyError subclasses.
    """
    if not isinstance(command, str) or not command.strip():
        raise ValidationError("the command is empty", field="command")
    if "\0" in command:
        raise ValidationError("the command contains a NUL byte", field="command")
    if timeout is None or timeout <= 0:
        raise ValidationError("the timeout must be positive", field="timeout")
    if max_output < 0:
        raise ValidationError("max_output must not be negative", field="max_output")

    started = time.monotonic()
    pool = pool or get_pool()
    channel = pool.open_session(target)
    try:
        if not _exec_request(channel, command, target):
            # The pooled connection died before the request could leave (the server closed
            # it): the command certainly did not start, so it is safe to run it once on a
            # fresh connection. Once a request is sent it is never repeated.
            log.warning(
                "ssh: pooled connection to %s lost before a command was sent (%s); reconnecting",
                target.address,
                type(channel.transport.get_exception()).__name__ if channel.transport else "-",
            )
            close_channel(channel)
            channel = pool.open_session(target)
            if not _exec_request(channel, command, target):
                raise unreachable(target.host, target.port, "the connection was lost")
        try:
            # Not channel.shutdown_write(): a command that already finished may have had its
            # channel closed meanwhile, and an EOF after our CLOSE makes sshd drop the whole
            # pooled connection (portal/ssh/chansend.py).
            send_eof(channel)
        except (paramiko.SSHException, EOFError, OSError):
            pass
        deadline = time.monotonic() + timeout
        stdout, stderr = _Capped(max_output), _Capped(max_output)
        if not _pump(channel, stdout, stderr, deadline) or not channel.status_event.wait(
            max(deadline - time.monotonic(), 0)
        ):
            send_signal(channel, "HUP")
            send_signal(channel, "TERM")
            close_channel(channel)
            raise CommandTimeout(f"command timed out after {timeout:g} s", timeout=timeout)
        if channel.exit_status == -1 and not channel.transport.is_active():
            raise unreachable(
                target.host, target.port, "the connection was lost during the command"
            )
        return ExecResult(
            exit_code=channel.exit_status,
            stdout=stdout.text(),
            stderr=stderr.text(),
            duration_ms=round((time.monotonic() - started) * 1000),
            truncated=stdout.truncated or stderr.truncated,
        )
    finally:
        close_channel(channel)


def _exec_request(channel: paramiko.Channel, command: str, target: Target) -> bool:
    """Send an `exec` request (chansend.exec_request). True when the command started, False
    when it could not be sent because the connection is dead; MachineUnreachable when the
    server refused it or the connection died after it was sent."""
    try:
        return exec_request(channel, command)
    except (paramiko.SSHException, EOFError, OSError):
        raise unreachable(target.host, target.port, "the command was refused") from None


def _pump(channel: paramiko.Channel, stdout: _Capped, stderr: _Capped, deadline: float) -> bool:
    """Drain both streams until EOF. False when the deadline passed first.

    Waits on the channel's pipe, which paramiko makes readable when either buffer
    has data, on EOF and on close. That pipe is an "or" of two flags updated by two
    threads without a common lock, so a wakeup can be lost when our read clears it
    while the transport thread sets it: hence the re-check after the last read
    and the bounded wait.
    """
    poller = select.poll()
    poller.register(channel.fileno(), select.POLLIN)
    while True:
        while channel.recv_ready():
            stdout.add(channel.recv(_READ_SIZE))
        while channel.recv_stderr_ready():
            stderr.add(channel.recv_stderr(_READ_SIZE))
        if channel.recv_ready() or channel.recv_stderr_ready():
            continue
        if channel.eof_received or channel.closed:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        poller.poll(max(int(min(left, _MAX_WAIT) * 1000), 1))
