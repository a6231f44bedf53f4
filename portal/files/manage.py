"""Managing files on a machine as the acting user: mkdir, rename/move, delete (recursive),
chmod. Each checks the policy first (`write_files`) and sends `file_changed`."""

from __future__ import annotations

import posixpath
import stat as statmod

from portal import signals
from portal.errors import Conflict, ValidationError
from portal.files.paths import clean_name, clean_path, exists, make_folders
from portal.files.remote import map_error, sftp_session
from portal.machines.access import require
from portal.machines.models import Machine


def _changed(user, machine, action: str, path: str, result: str, **details) -> None:
    signals.send(
        signals.file_changed,
        user=user,
        machine=machine,
        action=action,
        path=path,
        result=result,
        details=details,
    )


def mkdir(user, machine: Machine, path, *, parents: bool = False) -> dict:
    """A new folder; 409 when the name exists. With `parents` it is `mkdir -p`: the missing
    folders on the way are made too, and a folder that exists already is no error (a
    dropped folder's empty sub-folders, which carry no file to make them)."""
    require(user, machine, "write_files")
    path = clean_path(path)
    clean_name(posixpath.basename(path.rstrip("/")), field="path")
    made: list[str] = []
    with sftp_session(user, machine, "write_files") as sftp:
        try:
            if parents:
                start = "/" if path.startswith("/") else sftp.normalize(".")
                # `..` is taken lexically here, as in the path field of the drawer
                full = posixpath.normpath(posixpath.join(start, path))
                # Up to the deepest folder that exists (one stat when only the last is
                # missing), then down again making the rest.
                base, missing = full, []
                while (there := exists(sftp, base)) is None and base != "/":
                    missing.insert(0, posixpath.basename(base))
                    base = posixpath.dirname(base)
                if there is not None and not statmod.S_ISDIR(there.st_mode or 0):
                    raise Conflict(f"{base} is not a folder")
                make_folders(sftp, base, missing, made)
            else:
                parent = sftp.normalize(posixpath.dirname(path.rstrip("/")) or ".")
                full = posixpath.join(parent, posixpath.basename(path.rstrip("/")))
                if exists(sftp, full) is not None:
                    raise Conflict(f"already exists: {full}")
                sftp.mkdir(full)
                made.append(full)
        except OSError as exc:
            raise map_error(exc, path) from None
    for folder in made:
        _changed(user, machine, "mkdir", folder, "ok")
    return {"path": full, "created": made}


def rename(user, machine: Machine, path, new_path, *, overwrite: bool = False) -> dict:
    require(user, machine, "write_files")
    path = clean_path(path)
    new_path = clean_path(new_path)
    clean_name(posixpath.basename(new_path.rstrip("/")), field="to")
    with sftp_session(user, machine, "write_files") as sftp:
        try:
            src = sftp.normalize(path)
            parent = sftp.normalize(posixpath.dirname(new_path.rstrip("/")) or ".")
            dst = posixpath.join(parent, posixpath.basename(new_path.rstrip("/")))
            there = exists(sftp, dst)
            if there is not None and statmod.S_ISDIR(there.st_mode or 0):
                raise Conflict(f"{dst} is a folder")
            if there is not None and not overwrite:
                raise Conflict(f"already exists: {dst}")
            if there is not None:
                sftp.posix_rename(src, dst)
            else:
                sftp.rename(src, dst)
        except OSError as exc:
            raise map_error(exc, path) from None
    _changed(user, machine, "rename", src, "ok", to=dst)
    return {"path": dst}


def _remove_tree(sftp, path: str, removed: list[str], limit: int) -> None:
    attrs = sftp.lstat(path)
    if statmod.S_ISDIR(attrs.st_mode or 0):
        for a in sftp.listdir_attr(path):
            _remove_tree(sftp, posixpath.join(path, a.filename), removed, limit)
        sftp.rmdir(path)
    else:
        sftp.remove(path)
    removed.append(path)
    if len(removed) > limit:
        raise ValidationError(f"more than {limit} entries: delete it from a terminal")


def delete(user, machine: Machine, path) -> dict:
    """Delete a file, link or folder (recursively; links are removed, never followed)."""
    require(user, machine, "write_files")
    path = clean_path(path)
    removed: list[str] = []
    with sftp_session(user, machine, "write_files") as sftp:
        try:
            full = sftp.normalize(posixpath.dirname(path.rstrip("/")) or ".")
            full = posixpath.join(full, posixpath.basename(path.rstrip("/")))
            if full in ("/", "") or posixpath.basename(full) in ("", ".", ".."):
                raise ValidationError("refusing to delete that path", field="path")
            _remove_tree(sftp, full, removed, limit=100_000)
        except OSError as exc:
            raise map_error(exc, path) from None
    _changed(user, machine, "delete", full, "ok", removed=len(removed))
    return {"path": full, "removed": len(removed)}


def chmod(user, machine: Machine, path, mode) -> dict:
    require(user, machine, "write_files")
    path = clean_path(path)
    if isinstance(mode, str) and mode and all(c in "01234567" for c in mode) and len(mode) <= 4:
        value = int(mode, 8)
    elif isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 0o7777:
        value = mode
    else:
        raise ValidationError('mode must be octal, e.g. "0644"', field="mode")
    with sftp_session(user, machine, "write_files") as sftp:
        try:
            full = sftp.normalize(path)
            sftp.chmod(full, value)
        except OSError as exc:
            raise map_error(exc, path) from None
    _changed(user, machine, "chmod", full, "ok", mode=f"{value:04o}")
    return {"path": full, "mode": f"{value:04o}"}
