"""Reading the audit log (filters, full-text, cursors, export) and retention.

Who sees what: a global admin sees every event; anyone else only events they caused
(actor) or that name them as the target user.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

from sqlalchemy import and_, delete, literal, literal_column, or_, select, table

from portal.accounts.users import find_user_ref
from portal.audit import webhook
from portal.audit.models import AuditEvent
from portal.errors import AccessDenied, NotFound, ValidationError
from portal.extensions import db
from portal.machines.logs import parse_time
from portal.validation import get_int, get_str

MAX_ID = 2**31 - 1
ACTOR_MAX, ACTION_MAX, SEARCH_MAX = 254, 64, 200  # the filters' longest values
MACHINE_FILTER_MAX = 2**62
EXPORT_FIELDS = (
    "id",
    "at",
    "actor_id",
    "actor",
    "ip",
    "user_agent",
    "action",
    "target_type",
    "target_id",
    "target_name",
    "machine_id",
    "result",
    "details",
)


def _visible(user, stmt):
    if user.is_admin:
        return stmt
    mine = or_(
        AuditEvent.actor_id == user.id,
        and_(AuditEvent.target_type == "user", AuditEvent.target_id == str(user.id)),
    )
    return stmt.where(mine)


def _filters(stmt, args):
    actor = get_str(args, "actor", required=False, max_len=ACTOR_MAX)
    if actor:
        actor = actor.strip()
        if actor.isdigit():
            uid = int(actor) if int(actor) <= MAX_ID else None
            stmt = stmt.where(AuditEvent.actor_id == uid if uid else literal(False))
        elif actor in ("system", "anonymous") or actor.startswith("api key "):
            stmt = stmt.where(AuditEvent.actor == actor)
        else:
            try:
                stmt = stmt.where(AuditEvent.actor_id == find_user_ref(actor).id)
            except NotFound:
                stmt = stmt.where(literal(False))
    action = get_str(args, "action", required=False, max_len=ACTION_MAX)
    if action:
        stmt = stmt.where(AuditEvent.action == action.strip())
    machine = get_int(args, "machine", default=None, min_value=1, max_value=MACHINE_FILTER_MAX)
    if machine is not None:
        stmt = stmt.where(AuditEvent.machine_id == machine if machine <= MAX_ID else literal(False))
    result = get_str(args, "result", required=False, max_len=200)
    if result:
        stmt = stmt.where(AuditEvent.result == result.strip())
    since, until = parse_time(args, "since"), parse_time(args, "until")
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at <= until)
    q = get_str(args, "q", required=False, max_len=SEARCH_MAX)
    if q and q.strip():
        sqlite = db.session.get_bind().dialect.name == "sqlite"
        for word in q.lower().split()[:8]:
            pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            if sqlite and _rare(word):
                # the FTS5 trigram table (migration 0016) lists the few events holding it
                stmt = stmt.where(AuditEvent.id.in_(_fts_match(word)))
            else:  # PostgreSQL: its pg_trgm GIN index serves this LIKE itself; SQLite: a
                # frequent word is met at once walking the newest events
                stmt = stmt.where(AuditEvent.search.like(pattern, escape="\\"))
    return stmt


FTS_RARE = 5000  # matches up to which SQLite asks the trigram table rather than scanning


def _fts_match(word: str):
    # (no ESCAPE: FTS5 serves only a plain LIKE from its index; see _rare)
    return (
        select(literal_column("rowid"))
        .select_from(table("audit_events_fts"))
        .where(literal_column("search").like(f"%{word}%"))
    )


def _rare(word: str) -> bool:
    """SQLite: whether `word` is in at most FTS_RARE events (one read of the trigram index).
    A rare word is then fetched by id; a frequent one by walking the newest events, where 50
    matches come at once — each way is fast where the other is slow (0.2 s at 1M events)."""
    if len(word) < 3 or any(c in word for c in "\\%_"):
        return False  # shorter than a trigram, or needing ESCAPE: the plain scan
    found = db.session.execute(_fts_match(word).limit(FTS_RARE + 1)).all()
    return len(found) <= FTS_RARE


def list_events(user, args) -> tuple[list[AuditEvent], int | None]:
    limit = get_int(args, "limit", default=50, min_value=1, max_value=200)
    cursor = get_int(args, "cursor", default=None, min_value=1, max_value=2**62)
    stmt = _filters(_visible(user, select(AuditEvent)), args)
    if cursor is not None and cursor <= MAX_ID:
        stmt = stmt.where(AuditEvent.id < cursor)
    rows = list(db.session.scalars(stmt.order_by(AuditEvent.id.desc()).limit(limit + 1)))
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, rows[-1].id
    return rows, None


def export_rows(user, args, fmt: str):
    """A generator of text chunks (JSON Lines or CSV) over every matching event, read in
    batches by id so any range streams in constant memory."""
    if fmt not in ("jsonl", "csv"):
        raise ValidationError("format must be jsonl or csv", field="format")
    base = _filters(_visible(user, select(AuditEvent)), args)

    def generate():
        cursor = None
        if fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf).writerow(EXPORT_FIELDS)
            yield buf.getvalue()
        session = db.new_session()
        try:
            while True:
                stmt = base if cursor is None else base.where(AuditEvent.id < cursor)
                rows = list(session.scalars(stmt.order_by(AuditEvent.id.desc()).limit(1000)))
                if not rows:
                    break
                cursor = rows[-1].id
                buf = io.StringIO()
                if fmt == "jsonl":
                    for r in rows:
                        buf.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
                else:
                    w = csv.writer(buf)
                    for r in rows:
                        d = r.to_dict()
                        d["details"] = json.dumps(d["details"], ensure_ascii=False)
                        w.writerow([_csv_safe(d[f]) for f in EXPORT_FIELDS])
                yield buf.getvalue()
        finally:
            session.close()

    return generate()


def _csv_safe(value):
    """No spreadsheet formulas from user-controlled text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def prune(days: int, now: dt.datetime | None = None) -> int:
    """Retention: delete events older than `days` days (the only delete path)."""
    if days < 1:
        raise ValidationError("retention must be at least 1 day", field="days")
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=days)
    done = db.session.execute(
        delete(AuditEvent)
        .where(AuditEvent.at < cutoff)
        .execution_options(synchronize_session=False)
    )
    return done.rowcount or 0


def require_admin(user) -> None:
    if not user.is_admin:
        raise AccessDenied("only admins can do this")


def webhook_info() -> dict:
    return webhook.info(db.session)


def set_webhook(user, url, secret) -> None:
    require_admin(user)
    webhook.configure(db.session, url, secret)
