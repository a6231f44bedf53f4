"""Resumable uploads: the server side of tus 1.0 (core, creation, creation-with-upload,
termination, expiration).

An upload is a row in `file_uploads` (its offset is the truth any worker resumes from) and
a temporary file `.portal-upload-<id>` in the target folder on the machine; each PATCH
appends at the stored offset and saves the new offset even when the connection drops
mid-body. A creation may carry the first bytes itself (creation-with-upload: one request
for a small file instead of two), and an empty upload is complete once it is made (clients
never send a PATCH for it). When the last byte lands the temporary is renamed into place
(overwrite, keep both, or skip), and the transfer is recorded with its SHA-256: hashed as
the bytes pass when this process saw every PATCH of the upload (one PATCH, or a resume on
the same worker), read back from the machine otherwise (a PATCH served by another worker,
a restart).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import logging
import posixpath
import secrets
import stat as statmod
import time

import paramiko
from flask import current_app
from sqlalchemy import select

from portal import signals
from portal.db import utcnow
from portal.errors import Conflict, NotFound, PortalError, TooLarge, ValidationError
from portal.extensions import db
from portal.files import paths, remote, services, tus_stream
from portal.files.models import CONFLICTS, FileUpload
from portal.machines.access import require
from portal.machines.models import Machine
from portal.machines.targets import system_target
from portal.ssh import close_channel, get_pool

log = logging.getLogger(__name__)

VERSION = "1.0.0"
OCTETS = "application/offset+octet-stream"  # the body type of every tus write
WRITE_BLOCK = 1 << 20  # read from the HTTP body at a time (1.2x the rate of 256 KiB)


class UnsupportedMediaType(PortalError):
    """PATCH needs Content-Type: application/offset+octet-stream."""

    status = 415
    code = "media_type"


class OffsetMismatch(PortalError):
    """Upload-Offset does not match the upload's offset."""

    status = 409
    code = "offset"


def carries_data(content_type) -> bool:
    """A tus write's body type (a creation sent with it carries the first bytes)."""
    return (content_type or "").split(";")[0].strip().lower() == OCTETS


def parse_metadata(header: str | None) -> dict[str, str]:
    """`Upload-Metadata: key base64,key2 base64` -> dict (values decoded as UTF-8)."""
    out: dict[str, str] = {}
    for part in (header or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, _, value = part.partition(" ")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode() if value else ""
        except (ValueError, UnicodeDecodeError):
            raise ValidationError(f"Upload-Metadata {key!r} is not base64 UTF-8") from None
    return out


def expires_at(upload: FileUpload) -> dt.datetime:
    return upload.updated_at + dt.timedelta(
        seconds=current_app.config.get("PORTAL_FILES_UPLOAD_EXPIRY", 24 * 3600)
    )


def _made_folders(user, machine: Machine, folders: list[str]) -> None:
    for path in folders:
        signals.send(
            signals.file_changed,
            user=user,
            machine=machine,
            action="mkdir",
            path=path,
            result="ok",
            details={"by": "upload"},
        )


def create(
    user,
    machine: Machine,
    length_header,
    metadata_header,
    content_type=None,
    body=None,
    body_length: int | None = None,
) -> tuple[FileUpload, dict]:
    """POST: a new upload of Upload-Length bytes into metadata `folder` as `filename`;
    `conflict`: overwrite | keep (both) | skip | fail (default: 409 when the name exists).
    `relativePath` ("a/b/c.txt": a file of an uploaded folder) names the file and the
    folders under `folder` to put it in; the missing ones are created first. `body` (a
    stream, with `content_type` application/offset+octet-stream) is appended at once, as a
    PATCH would (`body_length`, when known, is checked first: a body past Upload-Length
    makes nothing); an upload of 0 bytes is finished at once. Returns the upload and where it
    stands, as `append` does: {offset, done, path?}."""
    require(user, machine, "write_files")
    if body is not None and not carries_data(content_type):
        raise UnsupportedMediaType(f"a creation with data must be sent as {OCTETS}")
    try:
        length = int(length_header)
    except (TypeError, ValueError):
        raise ValidationError("Upload-Length must be a whole number of bytes") from None
    if length < 0:
        raise ValidationError("Upload-Length must be a whole number of bytes")
    cap = current_app.config.get("PORTAL_FILES_MAX_UPLOAD", 0)
    if cap and length > cap:
        raise TooLarge(f"uploads are limited to {cap} bytes")
    if body is not None and body_length is not None and body_length > length:
        raise ValidationError("the body goes past Upload-Length")
    meta = parse_metadata(metadata_header)
    relative = meta.get("relativePath")
    if relative is not None:  # a file of a folder upload: its folders are made as needed
        name = paths.clean_relative(relative)[-1]
        if meta.get("filename") not in (None, "", name):
            raise ValidationError(
                "filename must be the last part of relativePath", field="filename"
            )
    else:
        name = paths.clean_name(meta.get("filename") or meta.get("name"), field="filename")
    folder = paths.clean_path(meta.get("folder") or ".")
    conflict = meta.get("conflict") or "fail"
    if conflict not in CONFLICTS:
        raise ValidationError(f"conflict must be one of {', '.join(CONFLICTS)}")
    expire(machine)
    upload_id = secrets.token_hex(16)
    made: list[str] = []
    try:
        with remote.sftp_session(user, machine, "write_files") as sftp:
            try:
                folder = sftp.normalize(folder)
                if not statmod.S_ISDIR(sftp.stat(folder).st_mode or 0):
                    raise ValidationError("the target is not a folder", field="folder")
                if relative is not None:
                    folder, _ = paths.make_parents(sftp, folder, relative, made)
                existing = paths.exists(sftp, posixpath.join(folder, name))
                if existing is not None and statmod.S_ISDIR(existing.st_mode or 0):
                    raise Conflict(f"{name} is a folder")
                if existing is not None and conflict == "fail":
                    raise Conflict(f"{name} already exists")
                temp = posixpath.join(folder, f"{paths.TEMP_PREFIX}{upload_id}")
                sftp.open(temp, "wb").close()
            except OSError as exc:
                raise remote.map_error(exc, folder) from None
    finally:  # folders made stay made (and audited) whatever happens next
        _made_folders(user, machine, made)
    upload = FileUpload(
        id=upload_id,
        machine_id=machine.id,
        user_id=user.id,
        folder=folder,
        name=name,
        temp_path=temp,
        length=length,
        offset=0,
        conflict=conflict,
    )
    db.session.add(upload)
    db.session.flush()
    if body is None and length > 0:
        return upload, {"offset": 0, "done": False}
    return upload, append(user, machine, upload_id, 0, OCTETS, body or io.BytesIO())


def get(user, machine: Machine, upload_id: str, need: str = "write_files") -> FileUpload:
    """The caller's own upload on this machine, else 404."""
    require(user, machine, need)
    upload = db.session.get(FileUpload, upload_id) if isinstance(upload_id, str) else None
    if upload is None or upload.machine_id != machine.id or upload.user_id != user.id:
        raise NotFound("no such upload (it finished, was cancelled or expired)")
    return upload


def _save_offset(upload_id: str, offset: int) -> None:
    """Persist the offset in its own transaction: a dropped PATCH rolls the request back,
    but the bytes that reached the machine count."""
    s = db.new_session()
    try:
        row = s.get(FileUpload, upload_id)
        if row is not None:
            row.offset = offset
            row.updated_at = utcnow()
        s.commit()
    finally:
        s.close()


def _final_name(sftp, upload: FileUpload) -> str | None:
    dest = posixpath.join(upload.folder, upload.name)
    if paths.exists(sftp, dest) is None or upload.conflict == "overwrite":
        return dest
    if upload.conflict == "skip":
        return None
    if upload.conflict == "fail":
        raise Conflict(f"{upload.name} already exists")
    stem, dot, ext = upload.name.rpartition(".")
    if not stem:
        stem, dot, ext = upload.name, "", ""
    for n in range(1, 1000):
        candidate = posixpath.join(upload.folder, f"{stem} ({n}){dot}{ext}")
        if paths.exists(sftp, candidate) is None:
            return candidate
    raise Conflict("too many copies of that name")


def append(user, machine: Machine, upload_id: str, offset_header, content_type, stream) -> dict:
    """PATCH: append the body at Upload-Offset; returns {offset, done, path?}."""
    upload = get(user, machine, upload_id)
    if not carries_data(content_type):
        raise UnsupportedMediaType(f"Content-Type must be {OCTETS}")
    try:
        offset = int(offset_header)
    except (TypeError, ValueError):
        raise ValidationError("Upload-Offset must be a whole number") from None
    if offset != upload.offset:
        raise OffsetMismatch(f"the upload is at offset {upload.offset}, not {offset}")
    uid, length, temp = upload.id, upload.length, upload.temp_path
    machine_id, user_id = machine.id, user.id
    app = current_app._get_current_object()
    began = time.monotonic()
    pos = offset
    done_path = None
    digest = tus_stream.take_digest(uid, offset)
    with remote.sftp_session(user, machine, "write_files") as sftp:
        try:
            try:
                f = sftp.open(temp, "r+b")
            except OSError as exc:
                raise remote.map_error(exc, temp) from None
            with f:
                have = f.stat().st_size
                if have < offset:
                    raise OffsetMismatch("the temporary file on the machine is shorter")
                if have > offset:  # a cut PATCH wrote past the offset it saved
                    f.truncate(offset)
                chan = (
                    remote.exec_append(sftp, machine_id, temp)
                    if length - offset >= remote.EXEC_MIN
                    else None
                )
                if chan is None:  # no shell on the machine: pipelined SFTP writes
                    f.set_pipelined(True)
                    f.seek(offset)
                sender = tus_stream.Sender(
                    f.write if chan is None else tus_stream.channel_writer(chan)
                )
                try:
                    while pos < length:
                        block = stream.read(min(WRITE_BLOCK, length - pos))
                        if not block:
                            break
                        sender.put(block)
                        if digest is not None:  # hashed while the sender encrypts and sends
                            digest.update(block)
                        pos += len(block)
                    if stream.read(1):
                        raise ValidationError("the body goes past Upload-Length")
                    sender.finish()
                finally:
                    sender.stop()
                    if chan is not None:
                        remote.finish_append(chan, temp)
        except OSError as exc:
            err = remote.map_error(exc, temp)
            if type(err) is PortalError:
                err = remote.DiskFull(f"writing failed on the machine (disk full?): {exc}")
            raise err from None
        except Exception:
            # A cut connection: keep what reached the machine (the file was flushed on close).
            try:
                pos = min(sftp.stat(temp).st_size, pos)
            except OSError:
                pos = offset
            _save_offset(uid, pos)
            raise
        if pos == length:
            if digest is None:  # some PATCHes went through another process: read it back
                digest = hashlib.sha256()
                with sftp.open(temp, "rb") as rf:
                    for data in remote.sftp_range(rf, 0, length - 1):
                        digest.update(data)
            dest = _final_name(sftp, upload)
            if dest is None:
                sftp.remove(temp)
                result = "skipped"
            else:
                sftp.posix_rename(temp, dest)
                result = "ok"
            done_path = dest
            row = {
                "direction": "upload",
                "path": dest or posixpath.join(upload.folder, upload.name),
                "size": length,
                "sha256": digest.hexdigest(),
                "duration_ms": int((time.monotonic() - began) * 1000),
                "result": result,
            }
            services.record(machine_id, user_id, **row)
            services.signal_transfer(app, user, machine, **row)
    if pos == length:
        s = db.new_session()
        try:
            row = s.get(FileUpload, uid)
            if row is not None:
                s.delete(row)
            s.commit()
        finally:
            s.close()
        return {"offset": pos, "done": True, "path": done_path}
    _save_offset(uid, pos)
    tus_stream.keep_digest(uid, pos, digest)
    return {"offset": pos, "done": False}


def terminate(user, machine: Machine, upload_id: str) -> None:
    """DELETE: drop the temporary file and the upload."""
    upload = get(user, machine, upload_id)
    temp, uid = upload.temp_path, upload.id
    tus_stream.take_digest(uid, -1)  # forget its running digest
    with remote.sftp_session(user, machine, "write_files") as sftp:
        try:
            sftp.remove(temp)
        except OSError as exc:
            log.info("temporary %r already gone: %s", temp, exc)
    s = db.new_session()
    try:
        row = s.get(FileUpload, uid)
        if row is not None:
            s.delete(row)
        s.commit()
    finally:
        s.close()


def expire(machine: Machine | None = None) -> int:
    """Forget uploads idle for longer than PORTAL_FILES_UPLOAD_EXPIRY and remove their
    temporaries (over the portal's own connection to each machine). Returns how many."""
    cutoff = utcnow() - dt.timedelta(
        seconds=current_app.config.get("PORTAL_FILES_UPLOAD_EXPIRY", 24 * 3600)
    )
    q = select(FileUpload).where(FileUpload.updated_at < cutoff)
    if machine is not None:
        q = q.where(FileUpload.machine_id == machine.id)
    rows = list(db.session.scalars(q))
    for row in rows:
        m = db.session.get(Machine, row.machine_id)
        try:
            channel = get_pool().open_session(system_target(m))
            try:
                channel.invoke_subsystem("sftp")
                paramiko.SFTPClient(channel).remove(row.temp_path)
            finally:
                close_channel(channel)
        except Exception as exc:  # unreachable now: the row goes anyway, the file stays
            log.info("could not remove the expired temporary %r: %s", row.temp_path, exc)
        db.session.delete(row)
    db.session.flush()
    return len(rows)
