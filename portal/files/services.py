"""File work on a machine over SFTP, as the acting user: list, stat, download (Range),
upload (temporary name + rename), mkdir, rename, delete, chmod; every transfer recorded.

Each call checks the access policy first (`browse_files`: viewer; `write_files`: operator),
then releases the database connection and opens its own SFTP channel on the machine's
pooled connection (so SSH I/O never holds the database, and concurrent calls do not share
one SFTP client).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import posixpath
import secrets
import shlex
import stat as statmod
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import paramiko
from flask import current_app
from sqlalchemy import select

from portal import signals, ssh
from portal.errors import (
    AccessDenied,
    Busy,
    Conflict,
    NotFound,
    PortalError,
    TooLarge,
    ValidationError,
)
from portal.extensions import db
from portal.files.models import FileTransfer
from portal.machines.access import require
from portal.machines.models import Machine
from portal.machines.targets import files_target

log = logging.getLogger(__name__)

MAX_PATH = 4096
READ_BLOCK = 32 * 1024  # SFTP read size OpenSSH serves whole
WINDOW = 256  # reads in flight per readv window (8 MiB)
WRITE_BLOCK = 256 * 1024
TEMP_PREFIX = ".portal-upload-"
# Seconds a transfer waits for the machine to take or give any byte (an SFTP answer, room in
# `cat`'s input, more of `head`'s output) before it fails: a stalled machine ends the
# request with an error instead of holding it, and its worker thread, forever.
STALL_TIMEOUT = 120.0


class DiskFull(PortalError):
    """The machine's disk is full."""

    status = 507
    code = "disk_full"


class RangeNotSatisfiable(PortalError):
    """The requested range is not satisfiable."""

    status = 416
    code = "range"


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


def clean_path(path) -> str:
    if not isinstance(path, str) or not path:
        raise ValidationError("path is required", field="path")
    if len(path) > MAX_PATH:
        raise ValidationError(f"path is longer than {MAX_PATH} characters", field="path")
    if "\x00" in path:
        raise ValidationError("path contains a NUL byte", field="path")
    return path


def clean_name(name, field: str = "name") -> str:
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ValidationError("a file name is required", field=field)
    if "/" in name:
        raise ValidationError("a file name cannot contain '/'", field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValidationError("a file name cannot contain control characters", field=field)
    if len(name.encode()) > 255:
        raise ValidationError("a file name is longer than 255 bytes", field=field)
    return name


RELATIVE_DEPTH_MAX = 64  # folders deep, counting the file: a folder upload's relative path


def clean_relative(rel, field: str = "relativePath") -> list[str]:
    """A path relative to an upload's target folder ("a/b/c.txt", as a browser reports a file
    of a picked or dropped folder) as its segments. Refused: absolute paths, empty, "." and
    ".." segments, control characters (NUL included), segments over 255 bytes, more than
    MAX_PATH characters or RELATIVE_DEPTH_MAX segments."""
    if not isinstance(rel, str) or not rel:
        raise ValidationError(f"{field} is empty", field=field)
    if len(rel) > MAX_PATH:
        raise ValidationError(f"{field} is longer than {MAX_PATH} characters", field=field)
    if rel.startswith("/"):
        raise ValidationError(f"{field} must be relative (it starts with '/')", field=field)
    parts = rel.split("/")
    if len(parts) > RELATIVE_DEPTH_MAX:
        raise ValidationError(
            f"{field} is more than {RELATIVE_DEPTH_MAX} folders deep", field=field
        )
    for part in parts:
        if part in ("", ".", ".."):
            raise ValidationError(f"{field} cannot hold empty, '.' or '..' segments", field=field)
        clean_name(part, field=field)
    return parts


def make_parents(
    sftp, base: str, relative: str, created: list[str] | None = None
) -> tuple[str, list[str]]:
    """Create under the folder `base` (absolute, as the machine resolved it) the folders of
    `relative` (every segment but the last, the file's name) that are missing. Returns the
    deepest folder and the folders created (also appended to `created` as they are made, so
    a caller knows them when a later one fails). A segment that exists and is not a folder
    is a 409; the caller maps OSErrors (map_error)."""
    parts = clean_relative(relative)
    if len(posixpath.join(base, *parts)) > MAX_PATH:
        raise ValidationError(
            f"the path would be longer than {MAX_PATH} characters", field="relativePath"
        )
    folder = base
    created = [] if created is None else created
    for part in parts[:-1]:
        folder = posixpath.join(folder, part)
        attrs = exists(sftp, folder)
        if attrs is None:
            try:
                sftp.mkdir(folder)
                created.append(folder)
            except OSError:
                attrs = exists(sftp, folder)  # another upload of the same folder made it
                if attrs is None:
                    raise
        if attrs is not None and not statmod.S_ISDIR(attrs.st_mode or 0):
            raise Conflict(f"{folder} is not a folder")
    return folder, created


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


def _entry(name: str, attrs: paramiko.SFTPAttributes) -> dict:
    mode = attrs.st_mode or 0
    if statmod.S_ISDIR(mode):
        kind = "dir"
    elif statmod.S_ISREG(mode):
        kind = "file"
    elif statmod.S_ISLNK(mode):
        kind = "link"
    else:
        kind = "other"
    return {
        "name": name,
        "type": kind,
        "size": attrs.st_size or 0,
        "mtime": attrs.st_mtime,
        "mode": f"{statmod.S_IMODE(mode):04o}",
        "permissions": statmod.filemode(mode),
        "uid": attrs.st_uid,
        "gid": attrs.st_gid,
    }


def page_role(user, machine: Machine) -> str:
    """The caller's role, when they may browse the machine's files (the files page hides
    what the role cannot do; each call below checks again)."""
    return require(user, machine, "browse_files")


def list_dir(
    user, machine: Machine, path: str | None, *, hidden: bool = False, limit=200, offset=0
) -> dict:
    """A folder's entries, folders first then by name; `limit`/`offset` page through it."""
    require(user, machine, "browse_files")
    path = clean_path(path or ".")
    with sftp_session(user, machine, "browse_files") as sftp:
        try:
            full = sftp.normalize(path)
            attrs = sftp.listdir_attr(full)
        except OSError as exc:
            raise map_error(exc, path) from None
        entries = []
        for a in attrs:
            if not hidden and a.filename.startswith("."):
                continue
            e = _entry(a.filename, a)
            if e["type"] == "link":
                try:
                    target = sftp.stat(posixpath.join(full, a.filename))
                    e["link_to"] = _entry(a.filename, target)["type"]
                except OSError:
                    e["link_to"] = None
            entries.append(e)
    entries.sort(key=lambda e: (e["type"] != "dir" and e.get("link_to") != "dir", e["name"]))
    return {
        "path": full,
        "entries": entries[offset : offset + limit],
        "total": len(entries),
        "limit": limit,
        "offset": offset,
    }


def stat(user, machine: Machine, path) -> dict:
    require(user, machine, "browse_files")
    path = clean_path(path)
    with sftp_session(user, machine, "browse_files") as sftp:
        try:
            full = sftp.normalize(path)
            attrs = sftp.stat(full)
        except OSError as exc:
            raise map_error(exc, path) from None
    e = _entry(posixpath.basename(full) or "/", attrs)
    e["path"] = full
    return e


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as (start, end inclusive), None for the whole file. Several ranges
    are answered with the whole file (RFC 9110 allows ignoring Range)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                raise RangeNotSatisfiable(f"bytes */{size}")
            return (max(size - n, 0), size - 1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        raise RangeNotSatisfiable("the range starts past the end of the file", size=size)
    if start < 0 or end < start:
        return None
    return (start, min(end, size - 1))


@dataclass
class Download:
    name: str
    path: str
    size: int  # of the whole file
    start: int
    end: int  # inclusive
    mtime: int | None
    chunks: Iterator[bytes]

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def record(machine_id: int, user_id: int | None, **row) -> None:
    """Write one transfer row in its own transaction (the stream ends after the request's
    transaction) and send `file_transferred`."""
    s = db.new_session()
    try:
        s.add(FileTransfer(machine_id=machine_id, user_id=user_id, **row))
        s.commit()
    except Exception:
        s.rollback()
        log.exception("could not record a file transfer")
    finally:
        s.close()


def signal_transfer(app, user, machine, **row) -> None:
    signals.send(
        signals.file_transferred,
        app=app,
        user=user,
        machine=machine,
        path=row["path"],
        direction=row["direction"],
        size=row["size"],
        sha256=row["sha256"],
        duration_ms=row["duration_ms"],
        result=row["result"],
        details={},
    )


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


def open_download(user, machine: Machine, path, range_header: str | None = None) -> Download:
    """A regular file streamed from the machine (special files are refused: /dev/zero and
    FIFOs never end). Reads are pipelined (readv windows), so memory stays bounded."""
    require(user, machine, "browse_files")
    path = clean_path(path)
    ctx = sftp_session(user, machine, "browse_files")
    sftp = ctx.__enter__()
    try:
        try:
            full = sftp.normalize(path)
            attrs = sftp.stat(full)
        except OSError as exc:
            raise map_error(exc, path) from None
        if statmod.S_ISDIR(attrs.st_mode or 0):
            raise ValidationError("that is a folder: download it as a zip", field="path")
        if not statmod.S_ISREG(attrs.st_mode or 0):
            raise ValidationError("not a regular file (device, FIFO or socket)", field="path")
        size = attrs.st_size or 0
        rng = parse_range(range_header, size) if size else None
        start, end = rng if rng else (0, size - 1)
        try:
            f = sftp.open(full, "rb")
        except OSError as exc:
            raise map_error(exc, path) from None
    except BaseException:
        ctx.__exit__(None, None, None)
        raise
    app = current_app._get_current_object()
    machine_id, user_id = machine.id, user.id
    blocks = (
        exec_range(sftp, machine_id, full, start, end) if end - start + 1 >= EXEC_MIN else None
    ) or sftp_range(f, start, end)

    def chunks() -> Iterator[bytes]:
        began = time.monotonic()
        digest = hashlib.sha256()
        sent = 0
        result = "ok"
        try:
            for data in blocks:
                digest.update(data)
                sent += len(data)
                yield data
        except GeneratorExit:
            result = "cancelled"
            raise
        except Exception as exc:
            result = f"failed: {exc}"[:200]
            log.warning("download of %r failed: %s", full, exc)
        finally:
            blocks.close()
            try:
                f.close()
            except Exception as exc:  # the channel may already be gone
                log.debug("closing %r: %s", full, exc)
            ctx.__exit__(None, None, None)
            row = {
                "direction": "download",
                "path": full,
                "size": sent,
                "sha256": digest.hexdigest() if result == "ok" else None,
                "duration_ms": int((time.monotonic() - began) * 1000),
                "result": result,
            }
            with app.app_context():
                record(machine_id, user_id, **row)
                signal_transfer(app, user, machine, **row)

    return Download(
        name=posixpath.basename(full),
        path=full,
        size=size,
        start=start,
        end=end,
        mtime=attrs.st_mtime,
        chunks=chunks(),
    )


def exists(sftp, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.stat(path)
    except OSError as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return None
        raise


EDIT_MAX = 1024 * 1024


def check_unchanged(sftp, path: str, attrs, expect: dict) -> None:
    """409 when the file changed on the machine since it was opened (size, mtime, hash)."""
    if attrs is None:
        raise Conflict("the file was deleted on the machine since you opened it", changed=True)
    now = {"size": attrs.st_size, "mtime": attrs.st_mtime}
    for key in ("size", "mtime"):
        if expect.get(key) is not None and str(expect[key]) != str(now[key]):
            raise Conflict("the file changed on the machine since you opened it", changed=True)
    if expect.get("sha256"):
        if (attrs.st_size or 0) > EDIT_MAX:
            raise Conflict("the file grew past 1 MiB on the machine", changed=True)
        with sftp.open(path, "rb") as fh:
            current = hashlib.sha256(fh.read()).hexdigest()
        if current != expect["sha256"]:
            raise Conflict("the file changed on the machine since you opened it", changed=True)


def upload(
    user,
    machine: Machine,
    path,
    stream,
    *,
    length: int | None,
    overwrite: bool = False,
    expect: dict | None = None,
) -> dict:
    """Write `stream` to `folder/name`: to a temporary name in that folder first, renamed
    into place only when complete (a failed upload never leaves a half-written file under
    the real name). 409 when the name exists and `overwrite` is false, or when `expect`
    (size, mtime, sha256 seen when the file was opened for editing) no longer matches."""
    require(user, machine, "write_files")
    path = clean_path(path)
    head, _, name = path.rstrip("/").rpartition("/")
    folder = head or ("/" if path.startswith("/") else ".")
    name = clean_name(name, field="path")
    cap = current_app.config.get("PORTAL_FILES_MAX_PUT", 256 * 1024 * 1024)
    if length is not None and cap and length > cap:
        raise TooLarge(f"a plain upload is limited to {cap} bytes: use the resumable upload")
    app = current_app._get_current_object()
    machine_id, user_id = machine.id, user.id
    began = time.monotonic()
    digest = hashlib.sha256()
    written = 0
    dest = posixpath.join(folder, name)
    result = "ok"
    try:
        with sftp_session(user, machine, "write_files") as sftp:
            try:
                folder_full = sftp.normalize(folder)
                dest = posixpath.join(folder_full, name)
                fattrs = sftp.stat(folder_full)
                if not statmod.S_ISDIR(fattrs.st_mode or 0):
                    raise ValidationError("the target is not a folder", field="path")
                existing = exists(sftp, dest)
                if existing is not None and statmod.S_ISDIR(existing.st_mode or 0):
                    raise Conflict(f"{name} is a folder")
                if existing is not None and not overwrite:
                    raise Conflict(f"{name} already exists (pass overwrite=1 to replace it)")
                if expect:
                    check_unchanged(sftp, dest, existing, expect)
                temp = posixpath.join(folder_full, f"{TEMP_PREFIX}{secrets.token_hex(8)}")
                f = sftp.open(temp, "wb")
            except OSError as exc:
                raise map_error(exc, dest) from None
            try:
                with f:
                    f.set_pipelined(True)
                    while True:
                        block = stream.read(WRITE_BLOCK)
                        if not block:
                            break
                        written += len(block)
                        if cap and written > cap:
                            raise TooLarge(f"a plain upload is limited to {cap} bytes")
                        digest.update(block)
                        f.write(block)
                if length is not None and written != length:
                    raise ValidationError("the upload ended before Content-Length bytes")
                if overwrite and existing is not None:
                    sftp.posix_rename(temp, dest)
                else:
                    sftp.rename(temp, dest)
            except BaseException as exc:
                try:
                    sftp.remove(temp)
                except Exception as rm_exc:
                    log.warning("could not remove the temporary %r: %s", temp, rm_exc)
                if isinstance(exc, OSError):
                    err = map_error(exc, dest)
                    if type(err) is PortalError and written:
                        err = DiskFull(f"writing {name} failed on the machine (disk full?): {exc}")
                    raise err from None
                raise
    except PortalError as exc:
        result = exc.message[:200]
        raise
    except Exception as exc:
        result = f"failed: {exc}"[:200]
        raise
    finally:
        row = {
            "direction": "upload",
            "path": dest,
            "size": written,
            "sha256": digest.hexdigest() if result == "ok" else None,
            "duration_ms": int((time.monotonic() - began) * 1000),
            "result": result,
        }
        record(machine_id, user_id, **row)
        signal_transfer(app, user, machine, **row)
    return {"path": dest, "size": written, "sha256": row["sha256"]}


def transfers_between(machine_id: int, user_id: int | None, since, until, limit: int = 200):
    """Transfers a user made on a machine in a time window (a terminal session's: its page
    lists them; the caller has checked that the acting user may see that session)."""
    q = select(FileTransfer).where(
        FileTransfer.machine_id == machine_id,
        FileTransfer.user_id == user_id,
        FileTransfer.created_at >= since,
    )
    if until is not None:
        q = q.where(FileTransfer.created_at <= until)
    return list(db.session.scalars(q.order_by(FileTransfer.id).limit(limit)))


def transfers(user, machine: Machine, limit: int = 50) -> list[FileTransfer]:
    require(user, machine, "browse_files")
    return list(
        db.session.scalars(
            select(FileTransfer)
            .where(FileTransfer.machine_id == machine.id)
            .order_by(FileTransfer.id.desc())
            .limit(limit)
        )
    )
