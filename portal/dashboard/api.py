"""JSON face of the dashboard: /api/dashboard/stats, recent-machines, recent-activity."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from portal.dashboard import services
from portal.machines import access as machine_access
from portal.web import api_login_required

bp = Blueprint("dashboard_api", __name__, url_prefix="/api/dashboard")


@bp.get("/stats")
@api_login_required
def stats():
    return jsonify(services.stats(g.user))


@bp.get("/recent-machines")
@api_login_required
def recent_machines():
    machines = services.recent_machines(g.user)
    roles = machine_access.roles_for(g.user, machines)
    return jsonify(machines=[m.to_dict(my_role=roles[m.id]) for m in machines])


@bp.get("/recent-activity")
@api_login_required
def recent_activity():
    return jsonify(activity=[log.to_dict() for log in services.recent_activity(g.user)])


@bp.get("/commands-per-day")
@api_login_required
def commands_per_day():
    series = services.commands_per_day(g.user)
    return jsonify(
        days=[
            {"day": d["day"].isoformat(), "total": d["total"], "failed": d["failed"]}
            for d in series
        ]
    )
