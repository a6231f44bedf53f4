"""The dashboard's figures, all scoped to the machines the caller may see.

Degrades gracefully: without the machines feature every machine figure is 0, without the
terminal feature sessions_active is 0. Built for a large history (1,000 machines, 1,000,000
command logs): every query is an index range scan, and finished days of the 14-day chart are
cached briefly because they no longer change."""

from __future__ import annotations

import datetime as dt
import threading
import time

from sqlalchemy import case, func, literal, select, union_all

from portal.community.search import open_issues_count
from portal.db import utcnow
from portal.extensions import db
from portal.machines import access as machine_access
from portal.machines.models import CommandLog, Machine
from portal.terminal.models import LIVE, TerminalSession

CHART_DAYS = 14


class Scope:
    """What a user may see: every machine (global admin) or a set of machine ids."""

    def __init__(self, user):
        self.user = user
        self.all = bool(user is not None and user.is_admin)
        self._ids: list[int] | None = None

    @property
    def ids(self) -> list[int]:
        if self.all:
            return []
        if self._ids is None:
            q = machine_access.visible_machines_query(self.user).with_only_columns(Machine.id)
            self._ids = list(db.session.scalars(q.order_by(None)))
        return self._ids

    @property
    def key(self):
        return "all" if self.all else ("user", self.user.id, tuple(self.ids))

    def filter_machines(self, stmt):
        if self.all:
            return stmt
        return stmt.where(Machine.id.in_(self.ids)) if self.ids else stmt.where(literal(False))


def today_start(now: dt.datetime | None = None) -> dt.datetime:
    now = now or utcnow()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _failed():
    return case((CommandLog.exit_code != 0, 1), else_=0)


def stats(user, scope: Scope | None = None) -> dict:
    scope = scope or Scope(user)
    out = {
        "machines_total": 0,
        "machines_online": 0,
        "sessions_active": 0,
        "commands_today": 0,
        "commands_failed_today": 0,
        "issues_open": open_issues_count(),
    }
    total, online = db.session.execute(
        scope.filter_machines(
            select(
                func.count(),
                func.coalesce(func.sum(case((Machine.status == "online", 1), else_=0)), 0),
            )
        ).select_from(Machine)
    ).one()
    out["machines_total"], out["machines_online"] = int(total), int(online or 0)
    n, failed = count_commands(scope, today_start())
    out["commands_today"], out["commands_failed_today"] = n, failed
    if TerminalSession is not None:
        q = (
            select(func.count())
            .select_from(TerminalSession)
            .where(TerminalSession.status.in_(LIVE))
        )
        if not scope.all:
            q = (
                q.where(TerminalSession.machine_id.in_(scope.ids))
                if scope.ids
                else q.where(literal(False))
            )
        out["sessions_active"] = int(db.session.scalar(q) or 0)
    return out


def recent_machines(user, limit: int = 5, scope: Scope | None = None) -> list:
    """The last active machines: most recently seen first, then newest."""
    scope = scope or Scope(user)
    last = func.coalesce(Machine.last_seen_at, Machine.created_at)
    stmt = (
        scope.filter_machines(select(Machine)).order_by(last.desc(), Machine.id.desc()).limit(limit)
    )
    return list(db.session.scalars(stmt))


def recent_activity(user, limit: int = 10, scope: Scope | None = None) -> list:
    """The last commands on machines the user may see, newest first (log order)."""
    if CommandLog is None:
        return []
    scope = scope or Scope(user)
    if scope.all:
        stmt = select(CommandLog).order_by(CommandLog.id.desc()).limit(limit)
        return list(db.session.scalars(stmt))
    if not scope.ids:
        return []
    ids = _top_ids_windowed(scope.ids, limit)
    if ids is None:  # nothing recent: fall back to a bounded per-machine look-up
        ids = _top_ids_per_machine(scope.ids, limit)
    if not ids:
        return []
    stmt = select(CommandLog).where(CommandLog.id.in_(ids)).order_by(CommandLog.id.desc())
    return list(db.session.scalars(stmt))


def _top_ids_per_machine(machine_ids: list[int], limit: int) -> list[int]:
    """The newest `limit` ids per machine through the (machine_id, id) index, merged: bounded
    work whatever the history holds (left alone, a planner may sort a machine's whole history)."""
    found: list[int] = []
    for i in range(0, len(machine_ids), 400):  # SQLite caps a compound SELECT at 500 terms
        parts = [
            select(CommandLog.id)
            .where(CommandLog.machine_id == mid)
            .order_by(CommandLog.id.desc())
            .limit(limit)
            .subquery()
            .select()
            for mid in machine_ids[i : i + 400]
        ]
        union = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
        found += db.session.scalars(select(union.c.id).order_by(union.c.id.desc()).limit(limit))
    return sorted(found, reverse=True)[:limit]


def _top_ids_windowed(machine_ids: list[int], limit: int) -> list[int] | None:
    """Look back through growing windows of recent ids: machine_id IN (...) AND id > X is a
    bounded seek per machine on (machine_id, id), so the usual case reads only recent rows.
    None when even the widest window is not conclusive."""
    top = db.session.scalar(select(func.max(CommandLog.id)))
    if top is None:
        return []
    for span in (5_000, 100_000):
        stmt = (
            select(CommandLog.id)
            .where(CommandLog.machine_id.in_(machine_ids), CommandLog.id > top - span)
            .order_by(CommandLog.id.desc())
            .limit(limit)
        )
        ids = list(db.session.scalars(stmt))
        if len(ids) == limit or top - span <= 0:
            return ids
    return None


# ---------------------------------------------------------------- commands per day

_cache: dict = {}
_cache_lock = threading.Lock()
CACHE_TTL = 300.0  # seconds a finished day's counts are reused
CACHE_MAX = 512


def count_commands(
    scope: Scope, start: dt.datetime, end: dt.datetime | None = None
) -> tuple[int, int]:
    """(commands, failed) logged in [start, end) on the machines in scope.

    A global admin counts a created_at range. Anyone else counts per machine through the
    (machine_id, id) index, bounded by the id range of the time window (min/max id over the
    created_at index): exact, because every row of the window lies inside its own id range, and
    it never walks a busy machine's whole history."""
    window = [CommandLog.created_at >= start]
    if end is not None:
        window.append(CommandLog.created_at < end)
    counts = select(func.count(), func.coalesce(func.sum(_failed()), 0))
    if scope.all:
        n, failed = db.session.execute(counts.where(*window)).one()
        return int(n), int(failed or 0)
    if not scope.ids:
        return 0, 0
    # id + 0: keeps PostgreSQL from answering min/max by walking the primary key from one end.
    rid = CommandLog.id + 0
    lo, hi = db.session.execute(select(func.min(rid), func.max(rid)).where(*window)).one()
    if lo is None:
        return 0, 0
    n, failed = db.session.execute(
        counts.where(
            CommandLog.machine_id.in_(scope.ids), CommandLog.id >= lo, CommandLog.id <= hi, *window
        )
    ).one()
    return int(n), int(failed or 0)


def commands_per_day(user, days: int = CHART_DAYS, scope: Scope | None = None,
                     today_counts: tuple[int, int] | None = None) -> list[dict]:  # fmt: skip
    """[{day, total, failed}] for the last `days` days, oldest first, today included.
    Finished days come from a short-lived cache (they cannot change except by deletion)."""
    first = today_start() - dt.timedelta(days=days - 1)
    out = []
    if CommandLog is None:
        return [
            {"day": (first + dt.timedelta(days=i)).date(), "total": 0, "failed": 0}
            for i in range(days)
        ]
    scope = scope or Scope(user)
    bind = str(db.session.get_bind().url)
    now = time.monotonic()
    for i in range(days):
        start = first + dt.timedelta(days=i)
        end = start + dt.timedelta(days=1)
        if i == days - 1:
            counts = today_counts if today_counts is not None else count_commands(scope, start, end)
        else:
            key = (bind, scope.key, start.date())
            with _cache_lock:
                hit = _cache.get(key)
            if hit and now - hit[0] < CACHE_TTL:
                counts = hit[1]
            else:
                counts = count_commands(scope, start, end)
                with _cache_lock:
                    if len(_cache) > CACHE_MAX:
                        _cache.clear()
                    _cache[key] = (now, counts)
        out.append({"day": start.date(), "total": counts[0], "failed": counts[1]})
    return out


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def chart(series: list[dict], width: int = 560, height: int = 128) -> dict:
    """Geometry for a server-rendered SVG bar chart (no chart library, no script)."""
    peak = max([d["total"] for d in series] + [1])
    n = len(series)
    gap = 6
    bar_w = (width - gap * (n - 1)) / n
    plot_h = height - 2
    bars = []
    for i, d in enumerate(series):
        h_total = round(plot_h * d["total"] / peak, 1)
        h_failed = round(plot_h * d["failed"] / peak, 1)
        x = round(i * (bar_w + gap), 1)
        bars.append({
            **d,
            "x": x,
            "w": round(bar_w, 1),
            "y": round(plot_h - h_total, 1),
            "h": h_total,
            "fy": round(plot_h - h_failed, 1),
            "fh": h_failed,
            "label": d["day"].strftime("%d") if (n - 1 - i) % 2 == 0 else "",
            "title": f"{d['day'].strftime('%a %d %b')}: {d['total']} commands, {d['failed']} failed",
        })  # fmt: skip
    return {"bars": bars, "peak": peak, "width": width, "height": height, "plot_h": plot_h,
            "total": sum(d["total"] for d in series), "failed": sum(d["failed"] for d in series)}  # fmt: skip


def overview(user) -> dict:
    """Everything the dashboard page shows, computed with one scope."""
    scope = Scope(user)
    s = stats(user, scope)
    series = commands_per_day(
        user, scope=scope, today_counts=(s["commands_today"], s["commands_failed_today"])
    )
    machines = recent_machines(user, scope=scope)
    activity = recent_activity(user, scope=scope)
    roles = machine_access.roles_for(user, machines)
    return {
        "stats": s,
        "machines": machines,
        "may_open_terminal": {
            m.id for m in machines if machine_access.can(user, m, "open_terminal", roles[m.id])
        },
        "activity": activity,
        "machine_names": machine_names(activity, machines),
        "chart": chart(series),
        "today": today_start(),
    }


def machine_names(activity, machines) -> dict:
    """machine id -> (agent_id, name) for the activity rows, in one query."""
    known = {m.id: (m.agent_id, m.name) for m in machines}
    missing = {a.machine_id for a in activity} - set(known)
    if missing:
        M = Machine
        for mid, agent_id, name in db.session.execute(
            select(M.id, M.agent_id, M.name).where(M.id.in_(missing))
        ):
            known[mid] = (agent_id, name)
    return known
