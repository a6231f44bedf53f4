"""The /audit page: the log with filters and cursor paging (HTMX), and live sessions."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from portal.accounts.models import User
from portal.audit import services
from portal.errors import PortalError
from portal.extensions import db
from portal.terminal import access as terminal_access
from portal.terminal import policy
from portal.terminal import services as terminal
from portal.web import login_required

bp = Blueprint("audit", __name__)

FILTERS = ("actor", "action", "machine", "result", "since", "until", "q")


def _live(user):
    """(session, machine name) of the live sessions the user may close."""
    out = []
    for r in terminal.list_live(user):
        if policy.can_close(user, r):
            machine = terminal_access.machine_by_id(r.machine_id)
            out.append((r, machine.name if machine is not None else "(deleted machine)"))
    return out


@bp.get("/audit")
@login_required
def index():
    args = request.args
    errors = {}
    try:
        rows, next_cursor = services.list_events(g.user, args)
    except PortalError as err:
        rows, next_cursor = [], None
        errors[err.field or "q"] = err.message
    filters = {k: args.get(k, "") for k in FILTERS}
    ctx = dict(events=rows, next_cursor=next_cursor, filters=filters, errors=errors)
    if request.headers.get("HX-Request") and args.get("cursor"):
        return render_template("audit/_rows.html", **ctx)
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "audit-events":
        return render_template("audit/_events.html", **ctx), 400 if errors else 200
    webhook = services.webhook_info() if g.user.is_admin else None
    return render_template(
        "audit/index.html", live=_live(g.user), webhook=webhook, **ctx
    ), 400 if errors else 200


@bp.post("/audit/sessions/user/<int:user_id>/close")
@login_required
def close_user_sessions(user_id: int):
    """Close every live session of one user that the caller may close."""
    target = db.session.get(User, user_id)
    closed = 0
    for row, _name in _live(g.user):
        if target is not None and row.user_id == target.id:
            try:
                terminal.close_session(g.user, row)
                closed += 1
            except PortalError as err:
                flash(err.message, "error")
    flash(f"Closed {closed} session{'s' if closed != 1 else ''}.", "success")
    return redirect(url_for("audit.index"), 303)


@bp.post("/audit/webhook")
@login_required
def webhook():
    try:
        services.set_webhook(g.user, request.form.get("url"), request.form.get("secret"))
    except PortalError as err:
        if err.status >= 500 or err.status == 403:
            raise
        rows, next_cursor = services.list_events(g.user, {})
        return render_template(
            "audit/index.html",
            live=_live(g.user),
            webhook=services.webhook_info(),
            events=rows,
            next_cursor=next_cursor,
            filters={k: "" for k in FILTERS},
            errors={err.field or "url": err.message},
        ), err.status
    flash("Webhook saved.", "success")
    return redirect(url_for("audit.index"), 303)
