"""Images uploaded for posts: checked and re-encoded by content, stored under the uploads
folder, tied to the post that uses them; files follow the database transaction."""

from __future__ import annotations

import datetime as dt
import io
import re
import secrets
from pathlib import Path

from flask import current_app, url_for
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from portal.accounts.models import User
from portal.community.models import Attachment
from portal.db import utcnow
from portal.errors import TooLarge, ValidationError
from portal.extensions import db

UPLOAD_MAX = 5 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_FRAMES = 300
# Every frame of an animation is decoded to full-canvas RGBA (4 bytes a pixel): a tiny GIF with a
# big canvas and many frames would otherwise take gigabytes. 24 M pixels is ~96 MB at worst.
MAX_ANIMATION_PIXELS = 24_000_000
_FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp"}
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
FILENAME = re.compile(r"^[0-9a-f]{32}\.(png|jpg|gif|webp)$")
_UPLOAD_REF = re.compile(r"/community/uploads/([0-9a-f]{32}\.(?:png|jpg|gif|webp))")
_TOO_MANY_PIXELS = "the image has too many pixels (at most 40 megapixels)"
_NOT_IMAGE = "the file must be a PNG, JPEG, GIF or WebP image"


def uploads_dir() -> Path:
    return Path(current_app.config["PORTAL_UPLOADS_DIR"]) / "community"


def _reencode(data: bytes) -> tuple[bytes, str, int, int]:
    """Decode with Pillow (by content, never by name or declared type) and write a fresh file:
    no metadata, no trailing bytes, nothing a browser could sniff as HTML or script."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            size = probe.size
            probe.verify()
        if fmt not in _FORMATS:
            raise ValidationError(_NOT_IMAGE, field="file")
        if size[0] * size[1] > MAX_PIXELS or 0 in size:
            raise ValidationError(_TOO_MANY_PIXELS, field="file")
        ext = _FORMATS[fmt]
        out = io.BytesIO()
        with Image.open(io.BytesIO(data)) as img:
            if ext == "gif":
                # Animated GIFs stay animated (frames re-encoded, comments and extensions dropped).
                frames = getattr(img, "n_frames", 1)
                if frames > MAX_FRAMES:
                    raise ValidationError(
                        f"the GIF has more than {MAX_FRAMES} frames", field="file"
                    )
                if frames * size[0] * size[1] > MAX_ANIMATION_PIXELS:
                    raise ValidationError(
                        "the animation is too large (frames × width × height over 24 million)",
                        field="file",
                    )
                durations = []
                images = []
                for i in range(frames):
                    img.seek(i)
                    durations.append(int(img.info.get("duration", 100) or 100))
                    frame = img.convert("RGBA")
                    frame.info = {}  # convert() copies comments / extensions along
                    images.append(frame)
                first, rest = images[0], images[1:]
                kwargs = {"save_all": True, "append_images": rest, "duration": durations,
                          "loop": 0, "disposal": 2} if rest else {}  # fmt: skip
                first.save(out, format="GIF", optimize=False, **kwargs)
                width, height = first.size
            else:
                img.load()
                img.info = {}  # EXIF, XMP, ICC, text chunks: none of it is written back
                if ext == "jpg":
                    img = ImageOps.exif_transpose(img)  # keeps the picture upright
                    img = img.convert("RGB")
                    img.info = {}
                    img.save(out, format="JPEG", quality=88, optimize=True)
                elif ext == "png":
                    if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
                        img = img.convert("RGBA")
                    img.save(out, format="PNG", optimize=True)
                else:
                    if img.mode not in ("RGB", "RGBA"):
                        img = img.convert("RGBA")
                    img.save(out, format="WEBP", quality=88)
                width, height = img.size
    except ValidationError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationError(_TOO_MANY_PIXELS, field="file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ValidationError(_NOT_IMAGE, field="file") from None
    return out.getvalue(), ext, width, height


def save_upload(user: User, storage) -> Attachment:
    """A multipart FileStorage (or any object with .read) -> a stored, re-encoded image."""
    if storage is None or not hasattr(storage, "read"):
        raise ValidationError("send the image as multipart field 'file'", field="file")
    data = storage.read(UPLOAD_MAX + 1)
    if len(data) > UPLOAD_MAX:
        raise TooLarge("the image must be at most 5 MB")
    if not data:
        raise ValidationError("the file is empty", field="file")
    encoded, ext, width, height = _reencode(data)
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{secrets.token_hex(16)}.{ext}"
    (folder / name).write_bytes(encoded)
    att = Attachment(
        filename=name,
        content_type=CONTENT_TYPES[ext],
        size=len(encoded),
        width=width,
        height=height,
        uploader_id=user.id,
    )
    db.session.add(att)
    db.session.flush()
    # If the request fails after this point, the file must not linger.
    _unlink_after_rollback(db.session(), [name])
    _prune_orphans(user)
    return att


def upload_url(att: Attachment) -> str:
    return url_for("community.upload_file", filename=att.filename)


def bind_attachments(user: User, body: str, issue_id: int, fix_id: int | None) -> None:
    """Tie the author's own unbound uploads referenced by a body to its issue (and fix)."""
    names = set(_UPLOAD_REF.findall(body or ""))
    if not names:
        return
    db.session.execute(
        update(Attachment)
        .where(
            Attachment.filename.in_(names),
            Attachment.uploader_id == user.id,
            Attachment.issue_id.is_(None),
        )
        .values(issue_id=issue_id, fix_id=fix_id)
    )


def _prune_orphans(user: User) -> None:
    """Uploads never used in a post are removed after a day (checked on the next upload)."""
    cutoff = utcnow() - dt.timedelta(days=1)
    stale = db.session.execute(
        select(Attachment.id, Attachment.filename).where(
            Attachment.uploader_id == user.id,
            Attachment.issue_id.is_(None),
            Attachment.created_at < cutoff,
        )
    ).all()
    if stale:
        db.session.execute(delete(Attachment).where(Attachment.id.in_([r[0] for r in stale])))
        unlink_after_commit(db.session(), [r[1] for r in stale])


# Files follow the transaction: removed only once the rows are gone for good, and new files
# removed again if their row never commits.
def unlink_after_commit(session: Session, names: list[str]) -> None:
    session.info.setdefault("community_unlink_on_commit", []).extend(names)


def _unlink_after_rollback(session: Session, names: list[str]) -> None:
    session.info.setdefault("community_unlink_on_rollback", []).extend(names)


def _unlink(names: list[str]) -> None:
    folder = uploads_dir()
    for name in names:
        if FILENAME.match(name):
            (folder / name).unlink(missing_ok=True)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    names = session.info.pop("community_unlink_on_commit", None)
    session.info.pop("community_unlink_on_rollback", None)
    if names:
        try:
            _unlink(names)
        except RuntimeError:  # no app context: nothing we can resolve
            pass


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction) -> None:
    if previous_transaction.nested:
        return
    names = session.info.pop("community_unlink_on_rollback", None)
    session.info.pop("community_unlink_on_commit", None)
    if names:
        try:
            _unlink(names)
        except RuntimeError:
            pass
