"""JSON face of membership: invites, accounts made by an admin, password resets.
Routes hang on the accounts API blueprint; the services check that the caller is an admin."""

from __future__ import annotations

from flask import current_app, g, jsonify, request, url_for

from portal.accounts import membership, users
from portal.accounts.api import bp
from portal.db import iso
from portal.web import api_admin_required, json_body, page_args


def invite_url(raw: str) -> str:
    """The link to hand out. The token rides in the query string: access logs keep paths only."""
    base = (current_app.config.get("PORTAL_BASE_URL") or request.host_url).rstrip("/")
    return base + url_for("accounts.invite", token=raw)


@bp.post("/api/users/invites")
@api_admin_required
def admin_create_invite():
    invite, raw = membership.create_invite(g.user, json_body())
    body = {"invite": invite.to_dict(), "invite_url": invite_url(raw)}
    body["expires_at"] = iso(invite.expires_at)
    return jsonify(body), 201


@bp.get("/api/users/invites")
@api_admin_required
def admin_list_invites():
    limit, offset = page_args()
    rows, total = membership.list_invites(g.user, limit, offset)
    return jsonify({"invites": [i.to_dict() for i in rows], "total": total})


@bp.delete("/api/users/invites/<int:invite_id>")
@api_admin_required
def admin_revoke_invite(invite_id: int):
    invite = membership.get_invite(g.user, invite_id)
    membership.revoke_invite(g.user, invite)
    return jsonify({"invite": invite.to_dict()})


@bp.post("/api/users")
@api_admin_required
def admin_create_user():
    user, generated = membership.admin_create_user(g.user, json_body())
    body = {"user": user.to_dict()}
    if generated:
        body["password"] = generated  # shown this once
    return jsonify(body), 201


@bp.post("/api/users/<int:user_id>/reset-password")
@api_admin_required
def admin_reset_password(user_id: int):
    data = json_body() if request.content_length else {}
    user = users.find_user_ref(user_id)
    generated = membership.admin_reset_password(g.user, user, data.get("password"))
    body = {"user": user.to_dict()}
    if generated:
        body["password"] = generated  # shown this once
    return jsonify(body)
