"""Every rule of the community board: validation, rights, counters, search, uploads.
Both faces (pages and JSON) call these. Services flush, never commit."""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from flask import current_app, url_for
from sqlalchemy import and_, delete, event, func, or_, select, text, update
from sqlalchemy.orm import Session

from portal.accounts.models import User
from portal.community import markdown
from portal.community.models import Attachment, Fix, FixLike, Issue, IssueTag
from portal.db import utcnow
from portal.errors import AccessDenied, NotFound, TooLarge, ValidationError
from portal.extensions import db
from portal.validation import get_bool, get_choice, get_int, get_str, get_tags

TITLE_MIN, TITLE_MAX = 3, 200
BODY_MAX = 20_000
MAX_TAGS = 8
SORTS = ("newest", "liked", "unanswered")
STATUSES = ("open", "solved")

# ---------------------------------------------------------------- input


def clean_issue_input(data: dict, *, partial: bool = False) -> dict:
    """title/body/tags from a JSON object or a form; only present keys when partial."""
    if not isinstance(data, dict):
        raise ValidationError("request body must be an object")
    out: dict = {}
    if not partial or "title" in data:
        out["title"] = get_str(data, "title", min_len=TITLE_MIN, max_len=TITLE_MAX)
    if not partial or "body" in data:
        out["body"] = get_str(data, "body", max_len=BODY_MAX, strip=False).strip("\n")
    if not partial or "tags" in data:
        out["tags"] = get_tags(data, "tags", max_tags=MAX_TAGS)
    if partial and not out:
        raise ValidationError("nothing to change: send title, body or tags")
    return out


def clean_fix_body(data: dict) -> str:
    return get_str(data, "body", max_len=BODY_MAX, strip=False).strip("\n")


# ---------------------------------------------------------------- loading and rights


def get_issue(issue_id) -> Issue:
    try:
        issue_id = int(issue_id)
    except (TypeError, ValueError):
        raise NotFound("issue not found") from None
    issue = db.session.get(Issue, issue_id)
    if issue is None:
        raise NotFound("issue not found")
    return issue


def get_fix(issue: Issue, fix_id) -> Fix:
    """A fix of *this* issue; a fix of another issue is 404 here."""
    try:
        fix_id = int(fix_id)
    except (TypeError, ValueError):
        raise NotFound("fix not found") from None
    fix = db.session.get(Fix, fix_id)
    if fix is None or fix.issue_id != issue.id:
        raise NotFound("fix not found")
    return fix


def can_edit(user: User, issue: Issue) -> bool:
    return user.is_admin or (issue.author_id is not None and issue.author_id == user.id)


def check_can_edit(user: User, issue: Issue) -> None:
    if not can_edit(user, issue):
        raise AccessDenied("only the author or an admin may change this issue")


def can_accept(user: User, issue: Issue) -> bool:
    return can_edit(user, issue)


# ---------------------------------------------------------------- issues


def _set_tags(issue: Issue, tags: list[str]) -> None:
    issue.tag_rows = [IssueTag(tag=t, position=i) for i, t in enumerate(tags)]


def create_issue(user: User, data: dict) -> Issue:
    fields = clean_issue_input(data)
    issue = Issue(
        title=fields["title"],
        body=fields["body"],
        body_html=markdown.render(fields["body"]),
        status="open",
        author_id=user.id,
        fixes_count=0,
        likes_count=0,
    )
    _set_tags(issue, fields["tags"])
    db.session.add(issue)
    db.session.flush()
    _bind_attachments(user, fields["body"], issue.id, None)
    return issue


def update_issue(user: User, issue: Issue, data: dict) -> Issue:
    check_can_edit(user, issue)
    fields = clean_issue_input(data, partial=True)
    if "title" in fields:
        issue.title = fields["title"]
    if "body" in fields:
        issue.body = fields["body"]
        issue.body_html = markdown.render(fields["body"])
        _bind_attachments(user, fields["body"], issue.id, None)
    if "tags" in fields:
        db.session.execute(delete(IssueTag).where(IssueTag.issue_id == issue.id))
        db.session.expire(issue, ["tag_rows"])
        db.session.flush()
        _set_tags(issue, fields["tags"])
    issue.updated_at = utcnow()
    db.session.flush()
    return issue


def delete_issue(user: User, issue: Issue) -> None:
    """Fixes, likes and attachment rows go with the issue (FK cascade); files after commit."""
    check_can_edit(user, issue)
    names = list(
        db.session.scalars(select(Attachment.filename).where(Attachment.issue_id == issue.id))
    )
    db.session.execute(delete(Issue).where(Issue.id == issue.id))
    db.session.expunge(issue)
    db.session.flush()
    _unlink_after_commit(db.session(), names)


# ---------------------------------------------------------------- listing and search


@dataclass
class ListQuery:
    q: str | None = None
    status: str | None = None
    tag: str | None = None
    mine: bool = False
    sort: str = "newest"
    limit: int = 20
    offset: int = 0


def parse_list_args(args, *, default_limit: int = 20, max_limit: int = 200) -> ListQuery:
    status = get_choice(args, "status", STATUSES + ("all",), required=False) or None
    sort = get_choice(args, "sort", SORTS + ("most_liked", "likes"), required=False) or "newest"
    if sort in ("most_liked", "likes"):
        sort = "liked"
    tag = get_str(args, "tag", required=False, max_len=32)
    if tag:
        tag = tag.lower()
        if not all(c.isalnum() or c in "-_.:" for c in tag):
            raise ValidationError("tag may only hold letters, digits or - _ . :", field="tag")
    return ListQuery(
        q=get_str(args, "q", required=False, max_len=200),
        status=None if status == "all" else status,
        tag=tag,
        mine=get_bool(args, "mine"),
        sort=sort,
        limit=get_int(args, "limit", default=default_limit, min_value=1, max_value=max_limit),
        offset=get_int(args, "offset", default=0, min_value=0, max_value=1_000_000),
    )


_WORD = re.compile(r"\w+", re.UNICODE)


def _search_terms(q: str) -> list[str]:
    return _WORD.findall(q.lower())[:12]


def _search_clause(terms: list[str]):
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        query = " & ".join(f"{t}:*" for t in terms)
        vector = func.to_tsvector(
            text("'english'"), Issue.title + text("' '") + Issue.body
        )  # matches the GIN expression index in migration 0003
        return vector.op("@@")(func.to_tsquery(text("'english'"), query))
    if dialect == "sqlite" and _sqlite_has_fts():
        match = " ".join('"' + t.replace('"', "") + '"*' for t in terms)
        return Issue.id.in_(
            select(text("rowid"))
            .select_from(text("community_issues_fts"))
            .where(text("community_issues_fts MATCH :match").bindparams(match=match))
        )
    # Fallback: every term in the title or the body.
    return and_(*(or_(Issue.title.ilike(f"%{t}%"), Issue.body.ilike(f"%{t}%")) for t in terms))


def _sqlite_has_fts() -> bool:
    cache = current_app.extensions.setdefault("community_fts", {})
    bind = db.session.get_bind()
    key = str(bind.url)
    if key not in cache:
        cache[key] = bool(
            db.session.scalar(
                text("SELECT 1 FROM sqlite_master WHERE name = 'community_issues_fts'")
            )
        )
    return cache[key]


def list_issues(user: User, lq: ListQuery) -> tuple[list[Issue], int]:
    stmt = select(Issue)
    conds = []
    if lq.status:
        conds.append(Issue.status == lq.status)
    if lq.tag:
        conds.append(Issue.id.in_(select(IssueTag.issue_id).where(IssueTag.tag == lq.tag)))
    if lq.mine:
        conds.append(Issue.author_id == user.id)
    if lq.q:
        terms = _search_terms(lq.q)
        if terms:
            conds.append(_search_clause(terms))
    if conds:
        stmt = stmt.where(*conds)
    total = db.session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    if lq.sort == "liked":
        order = (Issue.likes_count.desc(), Issue.created_at.desc(), Issue.id.desc())
    elif lq.sort == "unanswered":
        order = (Issue.fixes_count.asc(), Issue.created_at.desc(), Issue.id.desc())
    else:
        order = (Issue.created_at.desc(), Issue.id.desc())
    rows = db.session.scalars(stmt.order_by(*order).limit(lq.limit).offset(lq.offset)).all()
    return list(rows), int(total or 0)


def accepted_ids(issues: list[Issue]) -> dict[int, int]:
    ids = [i.id for i in issues if i.status == "solved"]
    if not ids:
        return {}
    rows = db.session.execute(
        select(Fix.issue_id, Fix.id).where(Fix.issue_id.in_(ids), Fix.accepted.is_(True))
    )
    return {issue_id: fix_id for issue_id, fix_id in rows}


def popular_tags(limit: int = 12) -> list[tuple[str, int]]:
    rows = db.session.execute(
        select(IssueTag.tag, func.count())
        .group_by(IssueTag.tag)
        .order_by(func.count().desc(), IssueTag.tag)
        .limit(limit)
    )
    return [(t, int(n)) for t, n in rows]


def open_issues_count() -> int:
    return int(db.session.scalar(select(func.count()).where(Issue.status == "open")) or 0)


# ---------------------------------------------------------------- fixes and likes


def list_fixes(issue: Issue) -> list[Fix]:
    """Accepted first, then by likes, then oldest first (the first good answer stays on top)."""
    return list(
        db.session.scalars(
            select(Fix)
            .where(Fix.issue_id == issue.id)
            .order_by(Fix.accepted.desc(), Fix.likes_count.desc(), Fix.created_at, Fix.id)
        )
    )


def liked_fix_ids(user: User, fixes: list[Fix]) -> set[int]:
    if not fixes:
        return set()
    return set(
        db.session.scalars(
            select(FixLike.fix_id).where(
                FixLike.user_id == user.id, FixLike.fix_id.in_([f.id for f in fixes])
            )
        )
    )


def create_fix(user: User, issue: Issue, data: dict) -> Fix:
    body = clean_fix_body(data)
    fix = Fix(
        issue_id=issue.id,
        author_id=user.id,
        body=body,
        body_html=markdown.render(body),
        likes_count=0,
        accepted=False,
    )
    db.session.add(fix)
    db.session.flush()
    db.session.execute(
        update(Issue).where(Issue.id == issue.id).values(fixes_count=Issue.fixes_count + 1)
    )
    db.session.expire(issue, ["fixes_count"])
    _bind_attachments(user, body, issue.id, fix.id)
    return fix


def _recount_likes(issue: Issue, fix: Fix) -> None:
    n = db.session.scalar(select(func.count()).where(FixLike.fix_id == fix.id)) or 0
    fix.likes_count = int(n)
    db.session.flush()
    total = db.session.scalar(
        select(func.coalesce(func.sum(Fix.likes_count), 0)).where(Fix.issue_id == issue.id)
    )
    issue.likes_count = int(total or 0)
    db.session.flush()


def like_fix(user: User, issue: Issue, fix: Fix) -> tuple[int, bool]:
    """Idempotent: a second like is a no-op. Returns (likes, liked)."""
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    # ON CONFLICT DO NOTHING: two clicks racing each other still make one like.
    db.session.execute(
        upsert(FixLike)
        .values(fix_id=fix.id, user_id=user.id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["fix_id", "user_id"])
    )
    _recount_likes(issue, fix)
    return fix.likes_count, True


def unlike_fix(user: User, issue: Issue, fix: Fix) -> tuple[int, bool]:
    db.session.execute(delete(FixLike).where(FixLike.fix_id == fix.id, FixLike.user_id == user.id))
    _recount_likes(issue, fix)
    return fix.likes_count, False


def accept_fix(user: User, issue: Issue, fix: Fix) -> Fix:
    """Issue author or admin; one accepted fix per issue; the issue becomes solved."""
    if not can_accept(user, issue):
        raise AccessDenied("only the issue's author or an admin may accept a fix")
    db.session.execute(
        update(Fix)
        .where(Fix.issue_id == issue.id, Fix.id != fix.id, Fix.accepted.is_(True))
        .values(accepted=False)
    )
    fix.accepted = True
    issue.status = "solved"
    issue.updated_at = utcnow()
    db.session.flush()
    return fix


def unaccept_fix(user: User, issue: Issue, fix: Fix) -> Fix:
    if not can_accept(user, issue):
        raise AccessDenied("only the issue's author or an admin may change the accepted fix")
    fix.accepted = False
    issue.status = "open"
    issue.updated_at = utcnow()
    db.session.flush()
    return fix


# ---------------------------------------------------------------- uploads

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


def _bind_attachments(user: User, body: str, issue_id: int, fix_id: int | None) -> None:
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
    import datetime as dt

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
        _unlink_after_commit(db.session(), [r[1] for r in stale])


# Files follow the transaction: removed only once the rows are gone for good, and new files
# removed again if their row never commits.
def _unlink_after_commit(session: Session, names: list[str]) -> None:
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


# ---------------------------------------------------------------- "ask the community"


def _fence(text_: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text_)), default=0)
    return "`" * max(3, longest + 1)


def draft_from_log(user: User, log_id) -> dict:
    """A prefilled, unsaved issue from a command log the user may see (NotFound otherwise)."""
    from portal.machines import access as machine_access
    from portal.machines.models import CommandLog, Machine

    try:
        log_id = int(log_id)
    except (TypeError, ValueError):
        raise NotFound("command log not found") from None
    log = db.session.get(CommandLog, log_id)
    if log is None:
        raise NotFound("command log not found")
    machine = db.session.get(Machine, log.machine_id)
    if machine is None:
        raise NotFound("command log not found")
    machine_access.require(user, machine, "view_logs")  # NotFound if not visible
    d = log.to_dict()
    command = (d.get("command") or "").strip()
    exit_code = d.get("exit_code")
    output = d.get("output") or ""
    lines = output.rstrip("\n").splitlines()
    excerpt = "\n".join(lines[-40:])[-4000:]
    short = command.splitlines()[0] if command else "a command"
    if len(short) > 90:
        short = short[:87] + "..."
    title = f"{short} fails" + (f" with exit code {exit_code}" if exit_code is not None else "")
    cmd_fence = _fence(command)
    out_fence = _fence(excerpt)
    body = (
        "I ran this command and it did not work:\n\n"
        f"{cmd_fence}console\n$ {command}\n{cmd_fence}\n\n"
        f"Exit code: **{exit_code if exit_code is not None else 'unknown'}**\n\n"
        "Output (last lines):\n\n"
        f"{out_fence}\n{excerpt}\n{out_fence}\n\n"
        "What I expected / what I tried:\n\n"
    )
    return {"title": title[:TITLE_MAX], "body": body[:BODY_MAX], "tags": ""}
