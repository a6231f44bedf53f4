"""HTML face: the terminal page, the sessions list, a session's detail and the watch page.
Templates (templates/terminal/) belong to the front end; these views only pass data."""

from __future__ import annotations

from flask import Blueprint, g, render_template, request, url_for

from portal.terminal import listing, policy, services
from portal.web import is_htmx, login_required

bp = Blueprint("terminal", __name__)


@bp.get("/machines/<agent_id>/terminal")
@login_required
def page(agent_id):
    machine = policy.machine_for_terminal(g.user, agent_id)
    session_id = request.args.get("session") or None
    if session_id is not None and len(session_id) > 36:
        session_id = None
    return render_template(
        "terminal/page.html",
        machine=machine,
        session_id=session_id,
        ws_url_path=url_for("terminal_ws.terminal", agent_id=machine.agent_id),
    )


@bp.get("/sessions")
@login_required
def sessions():
    found = listing.search(g.user, request.args)
    rows = found.rows
    # Its user, global admins and the machine's admins may close a session.
    closable = {r.id for r in rows if r.status != "closed" and policy.can_close(g.user, r)}
    ctx = {
        "sessions": services.sessions_dicts(rows),
        "closable": closable,
        "found": found,
        "statuses": list(listing.STATUSES),
    }
    status = 400 if found.errors else 200
    if is_htmx() and request.headers.get("HX-Target") == "sessions-rows":
        # The rows' own poll gets the rows; the filter form and the pager get the rows with
        # the pager, the count and the field messages (swapped out of band).
        poll = request.headers.get("HX-Trigger") == "sessions-rows"
        tpl = "terminal/_session_rows.html" if poll else "terminal/_session_results.html"
        return render_template(tpl, **ctx), status
    return render_template(
        "terminal/sessions.html",
        machines=listing.filter_machines(g.user),
        user_filter=listing.may_see_others(g.user),
        **ctx,
    ), status


@bp.get("/sessions/<sid>")
@login_required
def session_detail(sid):
    row = services.get_session(g.user, sid)
    detail = services.session_detail(g.user, row)
    if detail["recording_url"]:
        g.csp_allow_wasm = True  # asciinema-player compiles WebAssembly (no JS eval)
    return render_template(
        "terminal/session.html",
        session=detail["session"],
        commands=detail["commands"],
        transfers=detail["transfers"],
        recording_url=detail["recording_url"],
        can_close=policy.can_close(g.user, row) and row.status != "closed",
        can_share=policy.can_share(g.user, row) and row.status != "closed",
    )


@bp.get("/sessions/<sid>/traffic")
@login_required
def traffic(sid):
    """The detail page's live counters (polled while the session is live)."""
    row = services.get_session(g.user, sid)
    return render_template("terminal/_traffic.html", session=services.session_dict(row))


@bp.get("/sessions/<sid>/watch")
@login_required
def watch(sid):
    row = services.get_session(g.user, sid)
    return render_template(
        "terminal/watch.html",
        session=services.session_dict(row),
        watch_ws_path=url_for("terminal_ws.watch", sid=row.id),
    )
