"""The sessions list: the sessions a user may see, filtered (user, machine, status, dates)
and paged in SQL, live ones first.

Who may see what is policy.visible_sessions_clause (the SQL form of policy.can_see). Bad
filter values come back as messages per field, never as an exception the page cannot show.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from sqlalchemy import case, func, select

from portal.accounts.models import User
from portal.errors import PortalError
from portal.extensions import db
from portal.machines import access as machine_access
from portal.machines.inventory import get_machine
from portal.machines.models import Machine
from portal.terminal import policy
from portal.terminal.models import LIVE, TerminalSession

PER_PAGE = 25
MAX_PAGE = 100_000
#: the status filter's values -> the statuses they match ("" = any).
STATUSES: dict[str, tuple[str, ...]] = {
    "live": LIVE,
    "active": ("active",),
    "detached": ("detached",),
    "closed": ("closed",),
}
FIELDS = ("user", "machine", "status", "since", "until")


@dataclass
class SessionPage:
    rows: list = field(default_factory=list)
    total: int = 0
    page: int = 1
    pages: int = 1
    filters: dict = field(default_factory=dict)  # the filters as given (strings), for URLs
    errors: dict = field(default_factory=dict)  # field -> message

    @property
    def query(self) -> dict:
        """The filters worth keeping in a URL (empty ones left out)."""
        return {k: v for k, v in self.filters.items() if v}

    @property
    def has_live(self) -> bool:
        return any(r.status in LIVE for r in self.rows)


def _date(value: str, label: str, errors: dict, key: str) -> dt.date | None:
    if not value:
        return None
    try:
        if len(value) != 10:
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        errors[key] = f"{label}: use a date like 2026-05-31"
        return None


def parse_filters(args) -> tuple[dict, dict, dict]:
    """(filters as strings, parsed values, errors by field) from query arguments."""
    raw = {k: (args.get(k) or "").strip()[:100] for k in FIELDS}
    errors: dict[str, str] = {}
    values: dict = {}
    if raw["status"] and raw["status"] not in STATUSES:
        errors["status"] = "Status: choose live, active, detached or closed"
    values["statuses"] = STATUSES.get(raw["status"])
    values["since"] = _date(raw["since"], "From", errors, "since")
    values["until"] = _date(raw["until"], "To", errors, "until")
    if values["since"] and values["until"] and values["until"] < values["since"]:
        errors["until"] = "To: the end date is before the start date"
    page_arg = (args.get("page") or "1").strip()
    try:
        page = int(page_arg)
        if not 1 <= page <= MAX_PAGE:
            raise ValueError
    except ValueError:
        errors["page"] = "Page: a whole number from 1"
        page = 1
    values["page"] = page
    return raw, values, errors


def _resolve(user, raw: dict, errors: dict) -> tuple[User | None, Machine | None]:
    target = machine = None
    if raw["user"]:
        target = db.session.scalar(
            select(User).where(func.lower(User.username) == raw["user"].lower())
        )
        if target is None:
            errors["user"] = f"User: nobody is called {raw['user']!r}"
    if raw["machine"]:
        try:
            machine = get_machine(user, raw["machine"])
        except PortalError:  # NotFound, also for machines the caller may not see
            errors["machine"] = "Machine: no such machine among the ones you can see"
    return target, machine


def search(user, args) -> SessionPage:
    """One page of the sessions `user` may see, matching the filters in `args`."""
    raw, values, errors = parse_filters(args)
    target, machine = _resolve(user, raw, errors)
    result = SessionPage(filters=raw, errors=errors, page=values["page"])
    if errors:
        return result
    ts = TerminalSession
    where = [policy.visible_sessions_clause(user)]
    if target is not None:
        where.append(ts.user_id == target.id)
    if machine is not None:
        where.append(ts.machine_id == machine.id)
    if values["statuses"]:
        where.append(ts.status.in_(values["statuses"]))
    if values["since"]:
        where.append(ts.started_at >= _midnight(values["since"]))
    if values["until"]:
        where.append(ts.started_at < _midnight(values["until"] + dt.timedelta(days=1)))
    result.total = db.session.scalar(select(func.count()).select_from(ts).where(*where)) or 0
    result.pages = max(1, math.ceil(result.total / PER_PAGE))
    result.page = min(result.page, result.pages)
    live_first = case((ts.status == "closed", 1), else_=0)
    result.rows = list(
        db.session.scalars(
            select(ts)
            .where(*where)
            .order_by(live_first, ts.started_at.desc(), ts.id.desc())
            .offset((result.page - 1) * PER_PAGE)
            .limit(PER_PAGE)
        )
    )
    return result


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def filter_machines(user, limit: int = 500) -> list[Machine]:
    """The machines offered in the machine filter: the ones the user may see, by name."""
    stmt = machine_access.visible_machines_query(user).order_by(Machine.name).limit(limit)
    return list(db.session.scalars(stmt))


def may_see_others(user) -> bool:
    """Whether the user filter means anything to this user (global admins see everyone's)."""
    return bool(user is not None and user.is_admin)
