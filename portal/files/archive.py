"""A folder on a machine as a zip, streamed as it is read: nothing is buffered whole in
memory or on the portal's disk (zip entries with data descriptors, ZIP64 when needed)."""

from __future__ import annotations

import hashlib
import logging
import posixpath
import stat as statmod
import time
import zipfile
from collections.abc import Iterator

from flask import current_app

from portal.errors import ValidationError
from portal.files import paths, remote, services
from portal.machines.access import require
from portal.machines.models import Machine

log = logging.getLogger(__name__)

MAX_ENTRIES = 100_000


class _Pipe:
    """A write-only, unseekable file that hands what zipfile writes to the generator."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _walk(sftp, root: str, rel: str = "") -> Iterator[tuple[str, str, object]]:
    """(relative name, full path, attrs) of regular files and folders; links and special
    files are skipped (a link could loop, a FIFO never ends)."""
    for a in sorted(
        sftp.listdir_attr(posixpath.join(root, rel) if rel else root), key=lambda a: a.filename
    ):
        name = f"{rel}/{a.filename}" if rel else a.filename
        mode = a.st_mode or 0
        if statmod.S_ISDIR(mode):
            yield name + "/", posixpath.join(root, name), a
            yield from _walk(sftp, root, name)
        elif statmod.S_ISREG(mode):
            yield name, posixpath.join(root, name), a


def open_zip(user, machine: Machine, path) -> tuple[str, Iterator[bytes]]:
    """(zip file name, chunks) of a folder; the transfer is recorded when the stream ends."""
    require(user, machine, "browse_files")
    path = paths.clean_path(path)
    ctx = remote.sftp_session(user, machine, "browse_files")
    sftp = ctx.__enter__()
    try:
        try:
            root = sftp.normalize(path)
            if not statmod.S_ISDIR(sftp.stat(root).st_mode or 0):
                raise ValidationError("not a folder: download the file itself", field="path")
        except OSError as exc:
            raise remote.map_error(exc, path) from None
    except BaseException:
        ctx.__exit__(None, None, None)
        raise
    app = current_app._get_current_object()
    machine_id, user_id = machine.id, user.id
    base = posixpath.basename(root.rstrip("/")) or "root"

    def chunks() -> Iterator[bytes]:
        began = time.monotonic()
        digest = hashlib.sha256()
        sent = 0
        result = "ok"
        pipe = _Pipe()
        try:
            with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for n, (name, full, attrs) in enumerate(_walk(sftp, root)):
                    if n >= MAX_ENTRIES:
                        raise ValidationError(f"more than {MAX_ENTRIES} entries")
                    info = zipfile.ZipInfo(f"{base}/{name}", time.gmtime(attrs.st_mtime or 0)[:6])
                    info.external_attr = (attrs.st_mode or 0) << 16
                    if name.endswith("/"):
                        zf.writestr(info, b"")
                    else:
                        info.compress_type = zipfile.ZIP_DEFLATED
                        with (
                            sftp.open(full, "rb") as src,
                            zf.open(info, "w", force_zip64=True) as dst,
                        ):
                            reader = remote.sftp_range(src, 0, (attrs.st_size or 0) - 1)
                            try:
                                for data in reader:
                                    dst.write(data)
                                    out = pipe.take()
                                    if out:
                                        digest.update(out)
                                        sent += len(out)
                                        yield out
                            finally:
                                reader.close()
                    out = pipe.take()
                    if out:
                        digest.update(out)
                        sent += len(out)
                        yield out
            out = pipe.take()
            digest.update(out)
            sent += len(out)
            yield out
        except GeneratorExit:
            result = "cancelled"
            raise
        except Exception as exc:
            result = f"failed: {exc}"[:200]
            log.warning("zip of %r failed: %s", root, exc)
        finally:
            ctx.__exit__(None, None, None)
            row = {
                "direction": "zip",
                "path": root,
                "size": sent,
                "sha256": digest.hexdigest() if result == "ok" else None,
                "duration_ms": int((time.monotonic() - began) * 1000),
                "result": result,
            }
            with app.app_context():
                services.record(machine_id, user_id, **row)
                services.signal_transfer(app, user, machine, **row)

    return f"{base}.zip", chunks()
