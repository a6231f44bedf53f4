"""GET /api/audit and /api/audit/export: the audit log as JSON, JSON Lines or CSV."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request, stream_with_context

from portal.audit import services
from portal.web import api_login_required

bp = Blueprint("audit_api", __name__)


@bp.get("/api/audit")
@api_login_required
def list_events():
    rows, next_cursor = services.list_events(g.user, request.args)
    return jsonify({"events": [r.to_dict() for r in rows], "next_cursor": next_cursor})


@bp.get("/api/audit/export")
@api_login_required
def export():
    fmt = request.args.get("format", "jsonl")
    chunks = services.export_rows(g.user, request.args, fmt)
    mimetype = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    return Response(
        stream_with_context(chunks),
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="audit.{fmt}"'},
    )
