"""HTML face of machines (HTMX): list, add (direct / enrollment), detail, broadcast."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from portal.accounts.stepup import StepUpRequired
from portal.errors import AccessDenied, PortalError
from portal.extensions import db, limiter
from portal.machines import access as machine_access
from portal.machines import commands, enrollment, grants, inventory, targets
from portal.machines import logs as machine_logs
from portal.machines.api import base_url, machine_limit, machine_rate_limit, per_user_key
from portal.machines.models import AUTH_METHODS, STATUSES
from portal.machines.naming import look_alike
from portal.validation import get_str
from portal.web import is_htmx, login_required

bp = Blueprint("machines", __name__)


def error_status(err: PortalError) -> int:
    """The status of a page or partial re-rendered with the error next to the field. 4xx:
    htmx swaps these (base.html, htmx-config responseHandling) and the request boundary
    rolls back. A 5xx (the machine is unreachable) answers 200 so the message still shows
    in place, and the request is marked failed so its work is rolled back."""
    if err.status < 500:
        return 422 if err.status in (400, 422) else err.status
    db.fail_request(err.message)
    return 200


def _hx_redirect(url: str):
    if is_htmx():
        resp = Response(status=204)
        resp.headers["HX-Redirect"] = url
        return resp
    return redirect(url, 303)


# ---------------------------------------------------------------- list


@bp.get("/machines")
@login_required
def index():
    args = request.args
    q = get_str(args, "q", required=False, max_len=inventory.SEARCH_MAX) or ""
    tag = get_str(args, "tag", required=False, max_len=32) or ""
    status = args.get("status") if args.get("status") in STATUSES else ""
    rows, total = inventory.list_machines(g.user, q=q, tag=tag, status=status, limit=200)
    ctx = {
        "machines": rows,
        "total": total,
        "q": q,
        "tag": tag,
        "status": status,
        "statuses": STATUSES,
        "tags": inventory.all_tags(g.user),
        "roles": machine_access.roles_for(g.user, rows),
        "look_alike": look_alike(rows),
    }
    if is_htmx() and request.headers.get("HX-Target") == "machines-table":
        return render_template("machines/_table.html", **ctx)
    return render_template("machines/index.html", **ctx)


# ---------------------------------------------------------------- add


def _new_ctx(**extra):
    rows, _ = inventory.list_machines(g.user, limit=200)
    roles = machine_access.roles_for(g.user, rows)
    gateways = [
        m
        for m in rows
        if m.status != "pending" and machine_access.can(g.user, m, "use_as_gateway", roles[m.id])
    ]
    ctx = {
        "errors": {},
        "form": {},
        "auth_methods": AUTH_METHODS,
        "gateways": gateways,
        "mode": "direct",
        "scanned": [],
        "host_key_ack": False,
    }
    ctx.update(extra)
    return ctx


@bp.route("/machines/new", methods=["GET", "POST"])
@login_required
@limiter.shared_limit(
    machine_rate_limit, scope="machine-connect", key_func=per_user_key, methods=["POST"]
)
def new():
    if request.method == "GET":
        return render_template(
            "machines/new.html", **_new_ctx(mode=request.args.get("mode", "direct"))
        )
    data = request.form.to_dict()
    data["trust_host_key"] = False  # the page pins only the key lines the user confirmed
    confirmed_lines = request.form.getlist("host_key_confirmed")
    confirmed = "\n".join(confirmed_lines)

    def again(errors: dict, status: int):
        # Everything typed, pasted or fetched comes back (no-store page): the private key,
        # password, the fetched host keys and whether their box was ticked.
        ctx = _new_ctx(
            errors=errors,
            form=data,
            scanned=inventory.host_key_choices(confirmed_lines),
            host_key_ack=bool(data.get("host_key_ack")),
        )
        return render_template("machines/new.html", **ctx), status

    errors = inventory.field_errors(g.user, data)
    if not (data.get("host_key") or "").strip() and confirmed:
        if not data.get("host_key_ack"):
            errors["host_key"] = "tick the box to confirm you compared the fingerprints"
        data["host_key"] = confirmed
    if errors:
        return again(errors, 422)
    try:
        machine, _ = inventory.create_machine(g.user, data)
    except PortalError as err:
        errors = {err.field or "_form": err.message}
        return again(errors, error_status(err))
    if machine.status == "online":
        flash(f"{machine.name} added and reachable.", "success")
    elif machine.auth_method == "portal_key":
        flash(
            f"{machine.name} added. Put its public key (below) in ~/.ssh/authorized_keys of "
            f"{machine.username} on the machine, then use “Check connection again”.",
            "info",
        )
    else:
        flash(
            f"{machine.name} added, but the first connection failed: {machine.status_message}",
            "error",
        )
    return _hx_redirect(url_for("machines.detail", agent_id=machine.agent_id))


@bp.post("/machines/scan-host-key")
@limiter.limit("30 per minute")
@login_required
@machine_limit
def scan():
    """The trust step: show the fingerprints a host presents; the user confirms them."""
    try:
        keys = inventory.scan_host_keys(g.user, request.form.to_dict())
        error = None
    except PortalError as err:
        keys, error = [], err.message
    return render_template("machines/_hostkey_scan.html", keys=keys, error=error)


@bp.post("/machines/enroll")
@login_required
@machine_limit
def enroll():
    data = {"name": request.form.get("name", ""), "tags": request.form.get("tags", "")}
    try:
        machine, token = inventory.create_machine(g.user, data)
    except PortalError as err:
        status = error_status(err)
        errors = {err.field or "_form": err.message}
        ctx = _new_ctx(errors=errors, form=data, mode="enroll")
        return render_template("machines/new.html", **ctx), status
    return render_template(
        "machines/enrolled.html",
        machine=machine,
        command=enrollment.enroll_command(base_url(), token),
        expires_at=enrollment.token_expiry(token),
    )


# ---------------------------------------------------------------- detail


def _detail_ctx(machine, **extra):
    role = machine_access.role_of(g.user, machine)
    logs, next_cursor = machine_logs.list_logs(g.user, machine, {"limit": 20})
    may_manage = machine_access.can(g.user, machine, "list_access", role)
    ctx = {
        "m": machine,
        "role": role,
        "can_operate": machine_access.can(g.user, machine, "run_command", role),
        "is_admin": machine_access.can(g.user, machine, "update", role),
        "recent": machine_logs.recent_commands(g.user, machine),
        "logs": logs,
        "next_cursor": next_cursor,
        "q": "",
        "access": grants.list_access(g.user, machine) if may_manage else [],
        "errors": {},
        "result": None,
    }
    ctx.update(extra)
    return ctx


@bp.get("/machines/<agent_id>")
@login_required
def detail(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    return render_template("machines/detail.html", **_detail_ctx(machine))


@bp.post("/machines/<agent_id>/run")
@login_required
def run(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    data = {"command": request.form.get("command", ""), "timeout": request.form.get("timeout")}
    result = entry = error = None
    try:
        result, entry = commands.run_command(g.user, machine, data, source="page")
    except PortalError as err:
        error = err
    # A failed run's log and status are recorded by the service in their own transaction.
    status = 200 if error is None else error_status(error)
    recent = machine_logs.recent_commands(g.user, machine)
    resp = make_response(
        render_template(
            "machines/_command_result.html",
            m=machine,
            result=result,
            entry=entry,
            error=error,
            command=data["command"],
            recent=recent,
            oob=True,
            needs_terminal=result is not None
            and result.exit_code != 0
            and commands.needs_terminal(data["command"]),
        ),
        status,
    )
    resp.headers["HX-Trigger"] = "logs-changed"  # the log table on the page reloads itself
    return resp


@bp.get("/machines/<agent_id>/logs")
@login_required
def logs(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    q = get_str(request.args, "q", required=False, max_len=200) or ""
    error = None
    try:
        rows, next_cursor = machine_logs.search_logs(g.user, machine, request.args)
    except PortalError as err:
        rows, next_cursor, error = [], None, err.message
    template = "machines/_log_rows.html" if request.args.get("cursor") else "machines/_logs.html"
    return render_template(
        template,
        m=machine,
        logs=rows,
        next_cursor=next_cursor,
        q=q,
        error=error,
        filters=request.args,
    )


@bp.post("/machines/<agent_id>/access")
@login_required
def access(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    action = request.form.get("action", "grant")
    error, status = None, 200
    try:
        if action == "revoke":
            user = grants.revoke(g.user, machine, {"user": request.form.get("user", "")})
            message = f"{user.username} no longer has access."
        else:
            row = grants.grant(
                g.user,
                machine,
                {"user": request.form.get("user", ""), "role": request.form.get("role")},
            )
            message = f"{row.user.username} is now {row.role}."
    except AccessDenied:
        raise  # not an admin here: no access list to show
    except StepUpRequired:  # a page asks for the code (accounts/mfa_views.py)
        raise
    except PortalError as err:
        error, message, status = err.message, None, error_status(err)
    html = render_template(
        "machines/_access.html",
        m=machine,
        access=grants.list_access(g.user, machine),
        error=error,
        message=message,
    )
    return html, status


@bp.post("/machines/<agent_id>/host-key/scan")
@login_required
def hostkey_scan(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    keys, error, status = [], None, 200
    try:
        keys = targets.scan_machine_host_keys(g.user, machine)
    except PortalError as err:
        error, status = err.message, error_status(err)
    html = render_template(
        "machines/_hostkey_retrust.html",
        m=machine,
        keys=keys,
        error=error,
        may_pin=machine_access.can(g.user, machine, "retrust_host_key"),
    )
    return html, status


@bp.post("/machines/<agent_id>/check")
@login_required
@machine_limit
def check(agent_id: str):
    """“Check connection again” (operator), e.g. after installing the machine's public key."""
    machine = inventory.get_machine(g.user, agent_id)
    ok = inventory.check_connection(g.user, machine)  # a refusal: the page shows the message
    if ok:
        flash(f"{machine.name} is reachable.", "success")
    else:
        flash(f"The connection check failed: {machine.status_message}", "error")
    return _hx_redirect(url_for("machines.detail", agent_id=machine.agent_id))


@bp.post("/machines/<agent_id>/host-key")
@login_required
def hostkey_trust(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    # The fingerprints the scan showed, posted back: the service pins only keys a fresh
    # scan presents with exactly these fingerprints.
    fingerprints = " ".join(request.form.getlist("host_key"))
    try:
        targets.retrust_host_key(
            g.user,
            machine,
            {"host_key": fingerprints},
            acknowledged=bool(request.form.get("host_key_ack")),
        )
    except PortalError as err:
        status = error_status(err)
        html = render_template(
            "machines/_hostkey_retrust.html", m=machine, keys=[], error=err.message
        )
        return html, status
    flash("The new host key is pinned.", "success")
    return _hx_redirect(url_for("machines.detail", agent_id=machine.agent_id))


@bp.post("/machines/<agent_id>/enroll-token")
@login_required
def enroll_token(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    token = enrollment.new_registration_token(g.user, machine)
    return render_template(
        "machines/_enroll_command.html",
        command=enrollment.enroll_command(base_url(), token),
        expires_at=enrollment.token_expiry(token),
    )


@bp.post("/machines/<agent_id>/delete")
@login_required
def delete(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    name = machine.name
    inventory.delete_machine(g.user, machine)
    flash(f"{name} was deleted.", "success")
    return _hx_redirect(url_for("machines.index"))


# ---------------------------------------------------------------- broadcast
