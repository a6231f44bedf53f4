"""Fixes (answers) to an issue: posting, likes with their counters, the accepted fix.
Services flush, never commit."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update

from portal.accounts.models import User
from portal.community import markdown
from portal.community.issues import BODY_MAX, can_accept, get_row
from portal.community.models import Fix, FixLike, Issue
from portal.community.uploads import bind_attachments
from portal.db import utcnow
from portal.errors import AccessDenied, NotFound
from portal.extensions import db
from portal.validation import get_str


def clean_fix_body(data: dict) -> str:
    return get_str(data, "body", max_len=BODY_MAX, strip=False).strip("\n")


def get_fix(issue: Issue, fix_id) -> Fix:
    """A fix of *this* issue; a fix of another issue is 404 here."""
    fix = get_row(Fix, fix_id, "fix not found")
    if fix.issue_id != issue.id:
        raise NotFound("fix not found")
    return fix


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
    bind_attachments(user, body, issue.id, fix.id)
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
