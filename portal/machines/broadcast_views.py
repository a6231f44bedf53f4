"""HTML face of running one command on many machines: /machines/broadcast (the page, and the
run streamed back as NDJSON, one row per machine as it finishes). The rules are in
portal.machines.commands (`start_broadcast`); this loads, calls and renders."""

from __future__ import annotations

import json

from flask import Response, g, render_template, request, stream_with_context, url_for

from portal.accounts.stepup import StepUpRequired
from portal.community import fixes, issues
from portal.errors import PortalError
from portal.machines import access as machine_access
from portal.machines import commands, inventory
from portal.machines.views import bp
from portal.web import login_required

_FIELD_WORDS = {
    "choose machines (agent_ids) or a tag": "pick at least one machine or a tag",
    "agent_ids must be a list of strings": "pick machines from the list",
    "tag must be a string": "pick a tag from the list",
}


def _in_words(message: str) -> str:
    """The page speaks of machines and tags, not of the API's field names."""
    return _FIELD_WORDS.get(message, message.replace("agent_ids", "machines"))


@bp.get("/machines/broadcast")
@login_required
def broadcast_page():
    rows, _ = inventory.list_machines(g.user, limit=commands.BROADCAST_MAX)
    roles = machine_access.roles_for(g.user, rows)
    machines = [
        m
        for m in rows
        if m.status != "pending" and machine_access.can(g.user, m, "broadcast", roles[m.id])
    ]
    tags = sorted({t for m in machines for t in m.tag_list})
    return render_template(
        "machines/broadcast.html",
        machines=machines,
        tags=tags,
        selected=request.args.getlist("agent_id"),
        # "Run on machines…" from a community fix only fills the box; nothing runs until
        # the person picks machines and confirms.
        prefill=(request.args.get("command") or "")[: commands.MAX_COMMAND],
        from_fix=_fix_link(request.args.get("issue"), request.args.get("fix")),
    )


def _fix_link(issue_id, fix_id) -> dict | None:
    """The accepted community fix a prefilled command came from (a link back), or None."""
    if not issue_id or not fix_id:
        return None
    try:
        issue = issues.get_issue(issue_id)
        fix = fixes.get_fix(issue, fix_id)
    except PortalError:
        return None
    return {
        "title": issue.title,
        "url": url_for("community.issue", issue_id=issue.id) + f"#fix-{fix.id}",
    }


@bp.post("/machines/broadcast")
@login_required
def broadcast_run():
    """Streams NDJSON: first the table of targets, then one row per machine as it finishes.
    machines.js reads the stream and swaps each row in place."""
    data = {
        "command": request.form.get("command", ""),
        "timeout": request.form.get("timeout") or None,
        "agent_ids": request.form.getlist("agent_ids") or None,
        "tag": request.form.get("tag") or None,
    }
    from_fix = _fix_link(request.form.get("issue"), request.form.get("fix"))
    try:
        run = commands.start_broadcast(g.user, data)
    except StepUpRequired:  # a page asks for the code (accounts/mfa_views.py)
        raise
    except PortalError as err:
        body = json.dumps({"error": _in_words(err.message)}) + "\n"
        status = 422 if err.status in (400, 422) else err.status
        return Response(body, status=status, mimetype="application/x-ndjson")
    head = render_template(
        "machines/_broadcast_table.html",
        machines=run.machines,
        command=run.command,
        from_fix=from_fix,
    )

    def stream():
        yield json.dumps({"table": head}) + "\n"
        for m, entry in run.results():
            row = render_template("machines/_broadcast_row.html", m=m, r=entry)
            yield json.dumps({"agent_id": m.agent_id, "row": row}) + "\n"
        yield json.dumps({"done": True}) + "\n"

    resp = Response(stream_with_context(stream()), mimetype="application/x-ndjson")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
