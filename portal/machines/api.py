"""JSON face of machines: /api/machines... (API.md). Every rule is in services."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request

from portal.db import iso
from portal.errors import PortalError
from portal.extensions import limiter
from portal.machines import access, commands, editing, enrollment, grants, inventory, targets
from portal.machines import logs as machine_logs
from portal.validation import get_str
from portal.web import api_login_required, json_body, page_args

bp = Blueprint("machines_api", __name__)


def base_url() -> str:
    return (current_app.config.get("PORTAL_BASE_URL") or request.host_url).rstrip("/")


def per_user_key() -> str:
    return f"user:{g.user.id}"


def machine_rate_limit() -> str:
    return current_app.config.get("PORTAL_MACHINE_RATE_LIMIT") or "30 per minute"


#: Creating, scanning and checking machines open connections to addresses users type in:
#: one budget per user across both faces (PORTAL_MACHINE_RATE_LIMIT). Apply after the
#: login decorator, so the user is known.
machine_limit = limiter.shared_limit(
    machine_rate_limit, scope="machine-connect", key_func=per_user_key
)


def machine_body(machine) -> dict:
    """The API's `machine` for the caller."""
    return machine.to_dict(my_role=access.role_of(g.user, machine))


def _logs_body(rows, next_cursor) -> dict:
    return {"logs": [r.to_dict() for r in rows], "next_cursor": next_cursor}


@bp.get("/api/machines")
@api_login_required
def list_machines():
    limit, offset = page_args()
    args = request.args
    rows, total = inventory.list_machines(
        g.user,
        q=get_str(args, "q", required=False, max_len=inventory.SEARCH_MAX),
        tag=get_str(args, "tag", required=False, max_len=32),
        status=get_str(args, "status", required=False, max_len=16),
        limit=limit,
        offset=offset,
    )
    roles = access.roles_for(g.user, rows)
    return jsonify({"machines": [m.to_dict(my_role=roles[m.id]) for m in rows], "total": total})


@bp.post("/api/machines")
@api_login_required
@machine_limit
def create():
    data = json_body()
    machine, token = inventory.create_machine(g.user, data)
    body = {"machine": machine_body(machine)}
    if machine.public_key and (token or machine.auth_method == "portal_key"):
        # This machine's own public key: the line for its authorized_keys (nothing shared).
        body["public_key"] = machine.public_key
    if token:
        body["registration_token"] = token
        body["registration_expires_at"] = iso(enrollment.token_expiry(token))
        body["enroll_command"] = enrollment.enroll_command(base_url(), token)
    return jsonify(body), 201


@bp.post("/api/machines/scan-host-key")
@limiter.limit("30 per minute")
@api_login_required
@machine_limit
def scan_host_key():
    """+ The trust step: the host keys a server presents now (nothing stored)."""
    keys = inventory.scan_host_keys(g.user, json_body())
    return jsonify({"host_keys": [{"key": k, "fingerprint": fp} for k, fp in keys]})


@bp.get("/api/machines/by-id/<int:machine_id>")
@api_login_required
def by_id(machine_id: int):
    machine = inventory.get_machine_by_id(g.user, machine_id)
    return jsonify({"machine": machine_body(machine)})


@bp.get("/api/machines/<agent_id>")
@api_login_required
def detail(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    return jsonify({"machine": machine_body(machine)})


@bp.route("/api/machines/<agent_id>", methods=["PATCH", "PUT"])
@api_login_required
def update(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    editing.update_machine(g.user, machine, json_body())
    return jsonify({"machine": machine_body(machine)})


@bp.delete("/api/machines/<agent_id>")
@api_login_required
def delete(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    inventory.delete_machine(g.user, machine)
    return Response(status=204)


@bp.post("/api/machines/<agent_id>/command")
@api_login_required
def command(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    result, entry = commands.run_command(g.user, machine, json_body(), source="api")
    return jsonify(commands.result_dict(result, entry))


@bp.post("/api/machines/broadcast")
@api_login_required
def broadcast():
    """+ `{command, agent_ids? | tag?, timeout?}` -> `{results: [...]}` (run in parallel)."""
    results = commands.broadcast(g.user, json_body())
    return jsonify({"results": results, "total": len(results)})


@bp.get("/api/machines/<agent_id>/logs")
@api_login_required
def logs(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    return jsonify(_logs_body(*machine_logs.list_logs(g.user, machine, request.args)))


@bp.get("/api/machines/<agent_id>/logs/search")
@api_login_required
def logs_search(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    return jsonify(_logs_body(*machine_logs.search_logs(g.user, machine, request.args)))


@bp.get("/api/machines/<agent_id>/access/users")
@api_login_required
def access_users(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    users = [{**u, "granted_at": iso(u["granted_at"])} for u in grants.list_access(g.user, machine)]
    return jsonify({"users": users})


@bp.post("/api/machines/<agent_id>/access/grant")
@api_login_required
def access_grant(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    row = grants.grant(g.user, machine, json_body())
    return jsonify(
        {
            "user_id": row.user_id,
            "username": row.user.username,
            "role": row.role,
            "granted_at": iso(row.granted_at),
        }
    )


@bp.post("/api/machines/<agent_id>/access/revoke")
@api_login_required
def access_revoke(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    user = grants.revoke(g.user, machine, json_body())
    return jsonify({"user_id": user.id, "revoked": True})


@bp.post("/api/machines/<agent_id>/check")
@api_login_required
@machine_limit
def check(agent_id: str):
    """+ Check the connection again (operator), e.g. after installing the machine's public key.
    200 `{ok, machine}` either way; `machine.status_message` says what failed."""
    machine = inventory.get_machine(g.user, agent_id)
    ok = inventory.check_connection(g.user, machine)
    return jsonify({"ok": ok, "machine": machine_body(machine)})


@bp.post("/api/machines/<agent_id>/host-key")
@api_login_required
def retrust(agent_id: str):
    """+ Re-pin the host key: `{host_key: "SHA256:..."}` (the fingerprint of what a fresh scan
    shows; `trust_host_key: true` alone is a 400). Owner or global admin when the machine
    stores a password or key, else machine admin."""
    machine = inventory.get_machine(g.user, agent_id)
    targets.retrust_host_key(g.user, machine, json_body())
    return jsonify({"machine": machine_body(machine)})


@bp.post("/api/machines/<agent_id>/enroll-token")
@api_login_required
def enroll_token(agent_id: str):
    """+ A new enrollment token for a pending machine (admin); older ones stop working."""
    machine = inventory.get_machine(g.user, agent_id)
    token = enrollment.new_registration_token(g.user, machine)
    return jsonify(
        {
            "registration_token": token,
            "registration_expires_at": iso(enrollment.token_expiry(token)),
            "enroll_command": enrollment.enroll_command(base_url(), token),
        }
    )


# ---------------------------------------------------------------- public: enrollment


@bp.get("/api/machines/enroll.sh")
@limiter.limit("60 per minute")
def enroll_sh():
    # The token comes in a header (kept out of URLs and curl's argv); `?token=` stays
    # accepted for enroll commands shown before.
    token = request.headers.get("X-Registration-Token") or request.args.get("token", "")
    try:
        script = enrollment.enroll_script(token, base_url())
    except PortalError as err:
        body = f'echo "portal: {err.message}" >&2\nexit 1\n'
        return Response(body, status=err.status, mimetype="text/plain")
    resp = Response(script, mimetype="text/x-shellscript")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/api/machines/register")
@limiter.limit("30 per minute")
def register():
    machine = enrollment.register(json_body(), request.remote_addr)
    return jsonify({"machine": machine.to_dict()})
