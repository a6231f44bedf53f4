"""HTML face of the dashboard: the page, and the live partial it polls every 10 seconds."""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select

from portal.dashboard import services
from portal.extensions import db
from portal.machines.models import Machine, MachineAccess
from portal.web import login_required

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def root():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    return redirect(url_for("accounts.login"))


def _ctx() -> dict:
    ctx = services.overview(g.user)
    ctx["roles"] = _roles(ctx["machines"])
    ctx["machine_names"] = _names(ctx["activity"], ctx["machines"])
    return ctx


def _roles(machines) -> dict:
    """machine id -> the caller's role, in one query (owner and global admins hold admin)."""
    if not machines:
        return {}
    user = g.user
    roles = {m.id: "admin" for m in machines if user.is_admin or m.owner_id == user.id}
    rest = [m.id for m in machines if m.id not in roles]
    if rest:
        MA = MachineAccess
        rows = db.session.execute(
            select(MA.machine_id, MA.role).where(MA.user_id == user.id, MA.machine_id.in_(rest))
        )
        roles.update(dict(rows.all()))
    return roles


def _names(activity, machines) -> dict:
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


@bp.get("/dashboard")
@login_required
def index():
    return render_template("dashboard/index.html", **_ctx())


@bp.get("/dashboard/live")
@login_required
def live():
    return render_template("dashboard/_live.html", **_ctx())
