"""HTML face of editing a machine: /machines/<agent_id>/edit and its host-key fetch. The
rules are in portal.machines.editing; this loads, calls and renders."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for

from portal.accounts.stepup import StepUpRequired
from portal.errors import PortalError
from portal.machines import access as machine_access
from portal.machines import editing, inventory
from portal.machines.api import machine_limit
from portal.machines.models import AUTH_METHODS
from portal.machines.views import bp, error_status
from portal.web import login_required

#: What the page may post; a field missing from the form stays as it is.
FIELDS = (
    "name",
    "tags",
    "host",
    "port",
    "gateway",
    "username",
    "auth_method",
    "private_key",
    "passphrase",
    "password",
)


def _form_data() -> dict:
    form = request.form
    data = {k: form.get(k, "") for k in FIELDS if k in form}
    if "sensitive" in form:  # the checkbox sends "1" after its hidden "0"
        data["sensitive"] = form.getlist("sensitive")[-1] == "1"
    # the fingerprints the fetch showed (never key lines): the service scans again and pins
    # only keys that still present them
    fingerprints = [fp for fp in form.getlist("host_key") if fp]
    if fingerprints:
        data["host_key"] = " ".join(fingerprints)
    data["host_key_ack"] = bool(form.get("host_key_ack"))
    return data


def _ctx(machine, *, form=None, errors=None, scanned=None):
    role = machine_access.role_of(g.user, machine)
    rows, _ = inventory.list_machines(g.user, limit=200)
    roles = machine_access.roles_for(g.user, rows)
    gateways = [
        m
        for m in rows
        if m.id != machine.id
        and m.status != "pending"
        and machine_access.can(g.user, m, "use_as_gateway", roles[m.id])
    ]
    return {
        "m": machine,
        "role": role,
        "form": form if form is not None else editing.form_for(g.user, machine),
        "errors": errors or {},
        "auth_methods": AUTH_METHODS,
        "gateways": gateways,
        "pending": machine.status == "pending" or not machine.host,
        "may_move": machine_access.can(g.user, machine, "change_connection", role),
        "scanned": scanned or [],
    }


def _snapshot(machine) -> tuple:
    return (
        machine.host,
        machine.port,
        machine.gateway_id,
        machine.username,
        machine.auth_method,
        machine.secret_enc,
        machine.host_keys,
    )


@bp.route("/machines/<agent_id>/edit", methods=["GET", "POST"])
@login_required
def edit(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    if request.method == "GET":
        editing.form_for(g.user, machine)  # admins only (403 otherwise)
        return render_template("machines/edit.html", **_ctx(machine))
    editing.form_for(g.user, machine)
    data = _form_data()

    def again(errors: dict, status: int):
        # Everything typed or pasted comes back (the page is no-store), the stored secret
        # never does; fetched fingerprints are shown again with the box as it was.
        scanned = [(None, fp) for fp in (data.get("host_key") or "").split()]
        ctx = _ctx(machine, form=data, errors=errors, scanned=scanned)
        return render_template("machines/edit.html", **ctx), status

    errors = editing.edit_field_errors(g.user, machine, data)
    if errors:
        return again(errors, 422)
    before = _snapshot(machine)
    try:
        editing.update_machine(g.user, machine, {**data, "verify": True}, host_key_required=True)
    except StepUpRequired:  # a page asks for the code and sends the form again
        raise
    except PortalError as err:
        if err.status == 403:
            raise
        return again({err.field or "_form": err.message}, error_status(err))
    if before == _snapshot(machine):
        flash("Saved.", "success")
    elif machine.status == "online":
        flash(f"Saved. {machine.name} is reachable.", "success")
    elif machine.auth_method == "portal_key" and not machine.status_message:
        flash("Saved. Put the machine's public key in authorized_keys, then check again.", "info")
    else:
        flash(f"Saved, but the connection check failed: {machine.status_message}", "error")
    return redirect(url_for("machines.detail", agent_id=machine.agent_id), 303)


@bp.post("/machines/<agent_id>/edit/scan")
@login_required
@machine_limit
def edit_scan(agent_id: str):
    """The edit page's "Fetch host key": what the new address presents, for a person to
    compare and confirm."""
    machine = inventory.get_machine(g.user, agent_id)
    keys, error, status = [], None, 200
    try:
        keys = editing.scan_new_address(g.user, machine, request.form.to_dict())
    except PortalError as err:
        if err.status in (403, 404):
            raise
        error, status = err.message, error_status(err)
    return render_template(
        "machines/_edit_hostkey.html", m=machine, keys=keys, error=error, ack=False
    ), status
