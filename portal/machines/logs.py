"""Reading the command log: a machine's history, filters, full-text search, cursors."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import literal, select

from portal.accounts.users import find_user_ref
from portal.errors import (
    NotFound,
    ValidationError,
)
from portal.extensions import db
from portal.machines.access import (
    can,
    require,
)
from portal.machines.inventory import MAX_DB_ID, parse_id
from portal.machines.models import (
    SOURCES,
    CommandLog,
    Machine,
)
from portal.machines.search import apply_search
from portal.validation import get_choice, get_int, get_str

#: The log filters' longest values (the machine page's maxlength attributes too).
SEARCH_MAX, USER_FILTER_MAX = 200, 254


def recent_commands(user, machine: Machine, limit: int = 10) -> list[CommandLog]:
    """The caller's own latest commands on the machine."""
    require(user, machine, "view_logs")
    return list(
        db.session.scalars(
            select(CommandLog)
            .where(CommandLog.machine_id == machine.id, CommandLog.user_id == user.id)
            .order_by(CommandLog.id.desc())
            .limit(limit)
        )
    )


def get_log(user, log_id) -> CommandLog:
    """A log entry the user may see (viewer on its machine), else NotFound."""
    lid = parse_id(log_id)
    entry = db.session.get(CommandLog, lid) if lid is not None else None
    if entry is None or not can(user, entry.machine, "view_logs"):
        raise NotFound("log entry not found")
    return entry


def _cursor(args) -> int | None:
    cursor = get_int(args, "cursor", default=None, min_value=1, max_value=2**62)
    # Every id is below 2**31 (an int4 column on PostgreSQL): a larger cursor bounds nothing,
    # and binding it would overflow.
    return cursor if cursor is None or cursor <= MAX_DB_ID else None


def list_logs(user, machine: Machine, args) -> tuple[list[CommandLog], int | None]:
    require(user, machine, "view_logs")
    limit = get_int(args, "limit", default=50, min_value=1, max_value=200)
    stmt = select(CommandLog).where(CommandLog.machine_id == machine.id)
    cursor = _cursor(args)
    if cursor:
        stmt = stmt.where(CommandLog.id < cursor)
    stmt = _log_filters(stmt, args)
    rows = list(db.session.scalars(stmt.order_by(CommandLog.id.desc()).limit(limit + 1)))
    return _page(rows, limit)


def _page(rows, limit):
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, rows[-1].id
    return rows, None


TIME_MAX = 40  # an ISO 8601 time as typed in a filter


def parse_time(args, key: str) -> dt.datetime | None:
    raw = get_str(args, key, required=False, max_len=TIME_MAX)
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ValidationError(f"{key} must be an ISO 8601 time", field=key) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        value = value.astimezone(dt.UTC)
    except OverflowError:
        raise ValidationError(f"{key} is out of range", field=key) from None
    # Clamped to a range every engine and the id-hint margin (± minutes) can handle:
    # nothing is logged before 1970 or after 9000.
    return min(max(value, _TIME_MIN), _TIME_MAX)


_TIME_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


_TIME_MAX = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


def _log_filters(stmt, args):
    user_ref = get_str(args, "user", required=False, max_len=USER_FILTER_MAX)
    if user_ref and user_ref.strip().isdigit():
        uid = parse_id(user_ref)  # "²" or ids past 2**31-1 match nobody
        stmt = stmt.where(CommandLog.user_id == uid if uid is not None else literal(False))
    elif user_ref:
        try:
            stmt = stmt.where(CommandLog.user_id == find_user_ref(user_ref).id)
        except NotFound:
            stmt = stmt.where(literal(False))
    exit_code = args.get("exit_code")
    if exit_code not in (None, ""):
        if exit_code in ("failed", "nonzero", "!0"):
            stmt = stmt.where(CommandLog.exit_code != 0)
        else:
            code = get_int(args, "exit_code", min_value=-1, max_value=255)
            stmt = stmt.where(CommandLog.exit_code == code)
    since, until = parse_time(args, "since"), parse_time(args, "until")
    if since:
        stmt = stmt.where(CommandLog.created_at >= since)
    if until:
        stmt = stmt.where(CommandLog.created_at <= until)
    source = args.get("source")
    if source:
        stmt = stmt.where(CommandLog.source == get_choice(args, "source", SOURCES))
    return stmt


def search_logs(user, machine: Machine, args) -> tuple[list[CommandLog], int | None]:
    require(user, machine, "view_logs")
    q = get_str(args, "q", required=False, max_len=SEARCH_MAX)
    if not q:
        return list_logs(user, machine, args)
    limit = get_int(args, "limit", default=50, min_value=1, max_value=200)
    found = apply_search(select(CommandLog), q, machine.id)
    if found is None:
        return [], None
    stmt, order_col = found
    cursor = _cursor(args)
    if cursor:
        stmt = stmt.where(order_col < cursor)
    stmt = _log_filters(stmt, args)
    stmt = _time_hint(stmt, order_col, args)
    rows = list(db.session.scalars(stmt.order_by(order_col.desc()).limit(limit + 1)))
    return _page(rows, limit)


_HINT_MARGIN = dt.timedelta(minutes=10)


def _time_hint(stmt, order_col, args):
    """since/until as id bounds too, so the full-text index skips rows outside the range
    instead of checking each one. Ids grow with created_at (both set at insert); the
    10-minute margin keeps the bound safe, and the exact created_at filter stays."""
    until, since = parse_time(args, "until"), parse_time(args, "since")
    if until is not None:
        after = db.session.scalar(
            select(CommandLog.id)
            .where(CommandLog.created_at > until + _HINT_MARGIN)
            .order_by(CommandLog.created_at)
            .limit(1)
        )
        if after is not None:
            stmt = stmt.where(order_col < after)
    if since is not None:
        before = db.session.scalar(
            select(CommandLog.id)
            .where(CommandLog.created_at < since - _HINT_MARGIN)
            .order_by(CommandLog.created_at.desc())
            .limit(1)
        )
        if before is not None:
            stmt = stmt.where(order_col > before)
    return stmt
