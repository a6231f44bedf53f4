"""File work on a machine, as the acting user: list, stat, download (Range), a plain upload
(temporary name + rename), an editor's conflict check; every transfer recorded. Making
folders, renaming, deleting and chmod are in manage.py, resumable uploads in tus.py, zips in
archive.py; how the machine is reached (SFTP sessions, shell streams) in remote.py.

Each call checks the access policy first (`browse_files`: viewer; `write_files`: operator),
then releases the database connection and opens its own SFTP channel on the machine's
pooled connection (so SSH I/O never holds the database, and concurrent calls do not share
one SFTP client).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import secrets
import stat as statmod
import time
from collections.abc import Iterator
from dataclasses import dataclass

import paramiko
from flask import current_app
from sqlalchemy import select

from portal import signals
from portal.errors import Conflict, PortalError, TooLarge, ValidationError
from portal.extensions import db
from portal.files.models import FileTransfer
from portal.files.paths import TEMP_PREFIX, clean_name, clean_path, exists
from portal.files.remote import (
    EXEC_MIN,
    DiskFull,
    exec_range,
    map_error,
    sftp_range,
    sftp_session,
)
from portal.machines.access import require
from portal.machines.models import Machine

log = logging.getLogger(__name__)

WRITE_BLOCK = 256 * 1024  # a plain PUT's SFTP writes


class RangeNotSatisfiable(PortalError):
    """The requested range is not satisfiable."""

    status = 416
    code = "range"


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
