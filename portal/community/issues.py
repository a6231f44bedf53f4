"""Issues of the community board: input rules, loading, who may edit, create/update/delete.
Both faces (pages and JSON) call these. Services flush, never commit."""

from __future__ import annotations

from sqlalchemy import delete, select

from portal.accounts.models import User
from portal.community import markdown
from portal.community.models import Attachment, Issue, IssueTag
from portal.community.uploads import bind_attachments, unlink_after_commit
from portal.db import utcnow
from portal.errors import AccessDenied, NotFound, PortalError, ValidationError
from portal.extensions import db
from portal.validation import get_str, get_tags

TITLE_MIN, TITLE_MAX = 3, 200
BODY_MAX = 20_000
MAX_TAGS = 8


def issue_field_errors(data) -> dict[str, str]:
    """Every problem of an issue form at once (title, body, tags), for a page to show them
    all in one submit; clean_issue_input still checks each one itself."""
    errors: dict[str, str] = {}
    for field, check in (
        ("title", lambda: get_str(data, "title", min_len=TITLE_MIN, max_len=TITLE_MAX)),
        ("body", lambda: get_str(data, "body", max_len=BODY_MAX, strip=False)),
        ("tags", lambda: get_tags(data, "tags", max_tags=MAX_TAGS)),
    ):
        try:
            check()
        except PortalError as err:
            errors[err.field or field] = err.message
    return errors


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


def get_row(model, raw_id, message: str):
    """The `model` row whose id is `raw_id` (from a URL or a form), or NotFound(message)."""
    try:
        row_id = int(raw_id)
    except (TypeError, ValueError):
        raise NotFound(message) from None
    row = db.session.get(model, row_id)
    if row is None:
        raise NotFound(message)
    return row


def get_issue(issue_id) -> Issue:
    return get_row(Issue, issue_id, "issue not found")


def can_edit(user: User, issue: Issue) -> bool:
    return user.is_admin or (issue.author_id is not None and issue.author_id == user.id)


def check_can_edit(user: User, issue: Issue) -> None:
    if not can_edit(user, issue):
        raise AccessDenied("only the author or an admin may change this issue")


def can_accept(user: User, issue: Issue) -> bool:
    return can_edit(user, issue)


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
    bind_attachments(user, fields["body"], issue.id, None)
    return issue


def update_issue(user: User, issue: Issue, data: dict) -> Issue:
    check_can_edit(user, issue)
    fields = clean_issue_input(data, partial=True)
    if "title" in fields:
        issue.title = fields["title"]
    if "body" in fields:
        issue.body = fields["body"]
        issue.body_html = markdown.render(fields["body"])
        bind_attachments(user, fields["body"], issue.id, None)
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
    unlink_after_commit(db.session(), names)
