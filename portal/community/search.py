"""Listing and searching issues: filters, sorts, full-text search (PostgreSQL tsvector, SQLite
FTS5, else LIKE), tag counts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import and_, func, or_, select, text

from portal.accounts.models import User
from portal.community.models import Fix, Issue, IssueTag
from portal.errors import ValidationError
from portal.extensions import db
from portal.validation import get_bool, get_choice, get_int, get_str

SORTS = ("newest", "liked", "unanswered")
STATUSES = ("open", "solved")


@dataclass
class ListQuery:
    q: str | None = None
    status: str | None = None
    tag: str | None = None
    mine: bool = False
    sort: str = "newest"
    limit: int = 20
    offset: int = 0


SEARCH_MAX = 200  # the search box's maxlength too


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
        q=get_str(args, "q", required=False, max_len=SEARCH_MAX),
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
