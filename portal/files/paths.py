"""Paths and names as the files API takes them: checked before anything touches the machine
(length, NUL and control characters, a folder upload's relative path), and the folders of a
relative path made on the machine.
"""

from __future__ import annotations

import errno
import posixpath
import stat as statmod

import paramiko

from portal.errors import Conflict, ValidationError

MAX_PATH = 4096
TEMP_PREFIX = ".portal-upload-"  # an upload's temporary, in its target folder


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
    created = [] if created is None else created
    return make_folders(sftp, base, parts[:-1], created), created


def make_folders(sftp, base: str, parts: list[str], created: list[str]) -> str:
    """`mkdir -p` of `parts` under `base`: each missing folder is made and appended to
    `created`; the deepest folder is returned. A part that exists and is not a folder is a
    409; the caller maps OSErrors (map_error)."""
    folder = base
    for part in parts:
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
    return folder


def exists(sftp, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.stat(path)
    except OSError as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return None
        raise
