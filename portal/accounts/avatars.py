"""Profile pictures: an upload checked by its content and stored as a square PNG thumbnail."""

from __future__ import annotations

import io
import re
import secrets
from pathlib import Path

from flask import current_app

from portal.accounts.models import User
from portal.errors import TooLarge, ValidationError
from portal.extensions import db

AVATAR_MAX = 2 * 1024 * 1024
AVATAR_SIZE = 256


def save_avatar(user: User, stream, declared_size: int | None = None) -> str:
    """Check the upload by content (Pillow), re-encode to a square PNG thumbnail."""
    from PIL import Image, UnidentifiedImageError

    data = stream.read(AVATAR_MAX + 1)
    if len(data) > AVATAR_MAX:
        raise TooLarge("avatar must be at most 2 MB")
    if not data:
        raise ValidationError("avatar file is empty", field="avatar")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            probe.verify()
        if fmt not in {"PNG", "JPEG", "WEBP", "GIF"}:
            raise ValidationError("avatar must be a PNG, JPEG, WebP or GIF image", field="avatar")
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > 40_000_000:
                raise ValidationError("avatar image is too large", field="avatar")
            img.seek(0)
            img = img.convert("RGBA")
            side = min(img.width, img.height)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side))
            img = img.resize((AVATAR_SIZE, AVATAR_SIZE), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            img.save(out, format="PNG", optimize=True)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValidationError(
            "avatar must be a PNG, JPEG, WebP or GIF image", field="avatar"
        ) from None
    folder = Path(current_app.config["PORTAL_UPLOADS_DIR"]) / "avatars"
    folder.mkdir(parents=True, exist_ok=True)
    name = secrets.token_hex(16) + ".png"
    (folder / name).write_bytes(out.getvalue())
    old = user.avatar_file
    user.avatar_file = name
    db.session.flush()
    if old and re.fullmatch(r"[0-9a-f]{32}\.png", old):
        (folder / old).unlink(missing_ok=True)
    return user.avatar_url
