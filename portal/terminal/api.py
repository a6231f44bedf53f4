"""JSON face: tickets, live sessions, closing, sharing, session detail and recordings."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request, send_file

from portal.extensions import limiter
from portal.terminal import recordings, services
from portal.web import api_login_required, json_body

bp = Blueprint("terminal_api", __name__)


def _per_user() -> str:
    return f"user:{g.user.id}"


@bp.post("/api/terminal/<agent_id>/ticket")
@api_login_required
@limiter.limit("60 per minute", key_func=_per_user)  # after auth: counted per user
def ticket(agent_id):
    return jsonify(services.issue_ticket(g.user, agent_id))


@bp.get("/api/terminal/sessions")
@api_login_required
def sessions():
    rows = services.list_live(g.user)
    return jsonify({"sessions": services.sessions_dicts(rows), "total": len(rows)})


@bp.delete("/api/terminal/sessions/<sid>")
@api_login_required
def close(sid):
    row = services.get_session(g.user, sid)
    services.close_session(g.user, row)
    return "", 204


@bp.post("/api/terminal/sessions/<sid>/share")
@api_login_required
def share(sid):
    row = services.get_session(g.user, sid)
    shared = services.check_share_body(json_body())
    services.set_shared(g.user, row, shared)
    return jsonify({"session": services.session_dict(row)})


@bp.get("/api/sessions/<sid>")
@api_login_required
def detail(sid):
    row = services.get_session(g.user, sid)
    return jsonify(services.session_detail(g.user, row))


@bp.get("/api/sessions/<sid>/recording")
@api_login_required
def recording(sid):
    row = services.get_session(g.user, sid)
    download = request.args.get("download") in ("1", "true", "yes")
    path = recordings.recording_for(g.user, row, download=download)
    resp = send_file(
        path,
        mimetype="application/x-asciicast",
        as_attachment=download,
        download_name=f"session-{row.id}.cast",
        max_age=0,
        conditional=True,
    )
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


@bp.get("/api/machines/<agent_id>/sessions")
@api_login_required
def machine_sessions(agent_id):
    _machine, rows = services.list_for_machine(g.user, agent_id)
    return jsonify({"sessions": services.sessions_dicts(rows), "total": len(rows)})


@bp.get("/api/machines/<agent_id>/sessions/active")
@api_login_required
def machine_sessions_active(agent_id):
    _machine, rows = services.list_for_machine(g.user, agent_id, live_only=True)
    return jsonify({"sessions": services.sessions_dicts(rows), "total": len(rows)})
