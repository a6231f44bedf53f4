"""How the portal reaches a machine's files: an SFTP session on its own channel of the pooled
connection (after the access check, within the user's cap of concurrent sessions, with the
database connection released), SFTP failures mapped to the API's errors, pipelined SFTP reads,
and byte streams through the login shell (`head`/`tail` to download, `cat >>` to append) on
another channel of the same connection, which move about twice paramiko's SFTP rate.
"""

from __future__ import annotations

import errno
import logging
import secrets
import shlex
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import paramiko
from flask import current_app

from portal import ssh
from portal.errors import AccessDenied, Busy, Conflict, NotFound, PortalError
from portal.extensions import db
from portal.machines.models import Machine
from portal.machines.targets import files_target

log = logging.getLogger(__name__)

READ_BLOCK = 32 * 1024  # SFTP read size OpenSSH serves whole
WINDOW = 256  # reads in flight per readv window (8 MiB)
# Seconds a transfer waits for the machine to take or give any byte (an SFTP answer, room in
# `cat`'s input, more of `head`'s output) before it fails: a stalled machine ends the
# request with an error instead of holding it, and its worker thread, forever.
STALL_TIMEOUT = 120.0


class DiskFull(PortalError):
    """The machine's disk is full."""

    status = 507
    code = "disk_full"


class Stalled(PortalError):
    """The machine stopped answering in the middle of a file operation."""

    status = 504
    code = "timeout"


class NoSftp(PortalError):
    """The machine does not offer SFTP."""

    status = 502
    code = "no_sftp"


def map_error(exc: BaseException, path: str) -> PortalError:
    """Map an SFTP failure to the API's error with a status."""
    if isinstance(exc, PortalError):
        return exc
    code = getattr(exc, "errno", None)
    shown = path if len(path) < 200 else path[:200] + "..."
    if code == errno.ENOENT:
        return NotFound(f"no such file or folder: {shown}")
    if code in (errno.EACCES, errno.EPERM):
        return AccessDenied(f"permission denied on the machine: {shown}")
    if code == errno.EEXIST:
        return Conflict(f"already exists: {shown}")
    if code == errno.ENOSPC:
        return DiskFull(f"the machine's disk is full writing {shown}")
    if isinstance(exc, TimeoutError):
        return Stalled(f"the machine did not answer for {STALL_TIMEOUT:g} s ({shown})")
    text = str(exc) or exc.__class__.__name__
    return PortalError(f"{text} ({shown})")


_slots_lock = threading.Lock()
_slots: Counter[int] = Counter()  # user id -> SFTP sessions open in this process


@contextmanager
def _slot(user):
    """One of the user's PORTAL_FILES_MAX_CONCURRENT SFTP sessions in this process (0: no
    cap): a transfer holds it until its last byte, listing and managing for their moment."""
    cap = int(current_app.config.get("PORTAL_FILES_MAX_CONCURRENT") or 0)
    uid = user.id  # (the release may run after the request, the ORM object gone)
    with _slots_lock:
        if cap and _slots[uid] >= cap:
            raise Busy(f"you have {cap} file transfers running: wait for one to finish", limit=cap)
        _slots[uid] += 1
    try:
        yield
    finally:
        with _slots_lock:
            _slots[uid] -= 1
            if _slots[uid] <= 0:
                del _slots[uid]


@contextmanager
def sftp_session(user, machine: Machine, action: str):
    """An SFTP client on its own channel of the machine's pooled connection, after the
    access check and within the user's cap of concurrent sessions; the database connection
    is released while it is in use."""
    target = files_target(machine, user, action)
    with _slot(user):
        db.release()
        channel = ssh.get_pool().open_session(target)
        try:
            try:
                channel.settimeout(target.connect_timeout)
                channel.invoke_subsystem("sftp")
                client = paramiko.SFTPClient(channel)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise NoSftp(
                    f"{machine.name} does not offer SFTP (its sshd has no sftp subsystem): {exc}"
                ) from None
            channel.settimeout(STALL_TIMEOUT)
            yield client
        finally:
            ssh.close_channel(channel)


def sftp_range(f: paramiko.SFTPFile, start: int, end: int) -> Iterator[bytes]:
    """Bytes start..end (inclusive) of an open SFTP file, pipelined in readv windows.

    paramiko's readv sends a window's read requests from a helper thread; closing the channel
    while that thread still sends makes it die with "Socket is closed". So when this reader is
    closed early (a cancelled download) it first drains the window in flight (at most
    WINDOW reads), after which every request of it has been sent."""
    pos = start
    while pos <= end:
        reads = []
        while pos <= end and len(reads) < WINDOW:
            n = min(READ_BLOCK, end - pos + 1)
            reads.append((pos, n))
            pos += n
        window = f.readv(reads)
        try:
            for data in window:  # noqa: UP028 (`yield from` would close the window first)
                yield data
        except GeneratorExit:
            try:
                for _ in window:
                    pass
            except Exception as exc:  # the channel went away: its thread is done too
                log.debug("draining a read window: %s", exc)
            raise


EXEC_BLOCK = 256 * 1024
EXEC_MIN = 1024 * 1024  # fewer bytes than this go over SFTP (starting a command costs more)
# A download's read takes all its channel holds: more than the receive window (paramiko's
# 2 MiB), because after a partial read paramiko's buffer moves the rest down (~6 % faster in
# interleaved runs; a 4 MiB window was no faster and doubled the memory a download holds).
EXEC_TAKE = 4 * 1024 * 1024
EXEC_START_TIMEOUT = 5.0  # seconds for the machine's shell to start `head`
EXEC_RETRY = 600.0  # seconds before a machine that could not stream is tried again
# (machine id, its address, port and login, whether appending) -> when streaming that way
# failed there: SFTP meanwhile. The address is in the key because a machine's id may be
# reused (SQLite hands out a deleted last row's id again) and a machine may be edited.
_no_exec: dict[tuple, float] = {}


def _exec_start(sftp: paramiko.SFTPClient, machine_id: int, command: str, check: str = ""):
    """(channel, first output bytes) of `command` run by the login shell on a new channel of
    the SFTP client's SSH connection, once the shell has printed a random marker before it
    (so whatever the shell prints first, a chatty rc file, is skipped); None when the machine
    cannot run it (no shell, a forced SFTP-only command, or `check` failing, which runs
    before the marker: a restricted shell that refuses redirections): the caller then uses
    SFTP."""
    transport = sftp.get_channel().get_transport()
    key = (machine_id, *transport.getpeername()[:2], transport.get_username(), bool(check))
    failed = _no_exec.get(key)
    if failed is not None and time.monotonic() - failed < EXEC_RETRY:
        return None
    marker = secrets.token_hex(16).encode()
    chan = None
    try:
        chan = transport.open_session()
        chan.settimeout(EXEC_START_TIMEOUT)
        chan.exec_command(f"{check}printf %s {marker.decode()}; {command}")
        head = b""
        while marker not in head:
            data = chan.recv(EXEC_BLOCK)
            if not data or len(head) > 65536:
                raise OSError("its shell did not run the command")
            head += data
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.info("machine %s cannot stream through its shell (%s): using SFTP", machine_id, exc)
        _no_exec[key] = time.monotonic()
        ssh.close_channel(chan)
        return None
    chan.settimeout(STALL_TIMEOUT)
    return chan, head.split(marker, 1)[1]


def exec_range(sftp: paramiko.SFTPClient, machine_id: int, path: str, start: int, end: int):
    """Bytes start..end of `path` streamed by `head`/`tail` on a channel of the same SSH
    connection (one flow-controlled stream: about twice paramiko's SFTP read rate), or None
    when the machine cannot: then read over SFTP (`sftp_range`)."""
    count = end - start + 1
    q = shlex.quote(path)
    started = _exec_start(
        sftp,
        machine_id,
        f"tail -c +{start + 1} -- {q} | head -c {count}" if start else f"head -c {count} -- {q}",
    )
    if started is None:
        return None
    chan, first = started

    def stream() -> Iterator[bytes]:
        left = count
        try:
            data = first
            while True:
                if data:
                    data = data[:left]
                    left -= len(data)
                    yield data
                if left <= 0:
                    return
                data = chan.recv(EXEC_TAKE)
                if not data:
                    break
            status = chan.recv_exit_status()
            raise OSError(f"the file ended {left} bytes early (exit status {status})")
        finally:
            ssh.close_channel(chan)

    return stream()


def exec_append(sftp: paramiko.SFTPClient, machine_id: int, path: str):
    """A channel whose stdin `cat` appends to `path` (close it with `finish_append`), or None
    when the machine cannot: then write over SFTP."""
    q = shlex.quote(path)
    started = _exec_start(sftp, machine_id, f"exec cat >> {q}", check=f": >> {q} && ")
    return started[0] if started else None


def finish_append(chan: paramiko.Channel, path: str) -> None:
    """End `cat`'s input and wait for it to write the rest; its failure (a full disk) raises
    the API's error."""
    try:
        chan.shutdown_write()
        while chan.recv(4096):  # nothing comes but its end: cat has exited
            pass
        status = chan.recv_exit_status()
        err = b""
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(4096)
    finally:
        ssh.close_channel(chan)
    if status:
        text = err.decode(errors="replace").strip()[-300:] or f"exit status {status}"
        if "No space" in text:
            raise DiskFull(f"the machine's disk is full writing {path}")
        raise PortalError(f"writing {path} failed on the machine: {text}")
