"""JSON face of accounts: /api/signup, /api/login, /api/auth/*, /api/profile*, /api/users."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from portal.accounts import avatars, factors, membership, tokens
from portal.accounts import users as user_services
from portal.errors import AuthenticationRequired, ValidationError
from portal.extensions import limiter
from portal.validation import get_bool, get_str
from portal.web import api_admin_required, api_login_required, error_json, json_body, page_args

bp = Blueprint("accounts_api", __name__)


def auth_limit() -> str:
    return current_app.config["PORTAL_AUTH_RATE_LIMIT"]


@bp.post("/api/signup")
@limiter.limit(auth_limit)
def signup():
    data = json_body()
    user = membership.sign_up(
        email=data.get("email"),
        username=data.get("username"),
        password=data.get("password"),
        invite=data.get("invite"),
    )
    body = tokens.token_pair(user)
    body["user"] = user.to_dict()
    return jsonify(body), 201


@bp.post("/api/login")
@limiter.limit(auth_limit)
def login():
    data = json_body()
    login_value = data.get("login") or data.get("email") or data.get("username")
    user = user_services.authenticate(login_value, data.get("password"))
    used_mfa = False
    if factors.has_factor(user):
        factors.verify(user, data.get("totp"), data.get("recovery_code"))
        used_mfa = True
    membership.password_change_gate(user, data.get("new_password"))
    body = tokens.token_pair(user, mfa=used_mfa)
    body["user"] = user.to_dict()
    return jsonify(body)


@bp.post("/api/auth/refresh")
@limiter.limit(auth_limit)
def refresh():
    data = json_body()
    _user, pair = tokens.rotate_refresh_token(data.get("refresh_token"))
    return jsonify(pair)


@bp.post("/api/auth/logout")
@api_login_required
def logout():
    tokens.revoke_all_tokens(g.user)
    return jsonify({"ok": True})


@bp.get("/api/profile")
@api_login_required
def profile():
    return jsonify(
        {
            "user": g.user.to_dict(),
            "api_key_prefix": g.user.api_key_prefix,
            "has_api_key": bool(g.user.api_key_hash),
            "api_key_terminal": bool(g.user.api_key_hash and g.user.api_key_terminal),
            "api_key_mfa": bool(g.user.api_key_hash and g.user.api_key_mfa),
            "identities": [{"provider": i.provider, "email": i.email} for i in g.user.identities],
        }
    )


@bp.post("/api/profile/regenerate-api-key")
@api_login_required
def regenerate_api_key():
    data = json_body() if request.get_data() else {}
    terminal = get_bool(data, "terminal", default=True)
    key = user_services.regenerate_api_key(g.user, terminal=terminal)
    return jsonify(
        {
            "api_key": key,
            "api_key_prefix": g.user.api_key_prefix,
            "terminal": g.user.api_key_terminal,
            "mfa": g.user.api_key_mfa,
        }
    )


@bp.post("/api/profile/reset-password")
@api_login_required
def reset_password():
    data = json_body()
    user_services.change_password(g.user, data.get("current_password"), data.get("new_password"))
    body = tokens.token_pair(g.user)  # the caller stays signed in with a fresh pair
    body["ok"] = True
    return jsonify(body)


@bp.post("/api/profile/upload-avatar")
@api_login_required
def upload_avatar():
    upload = request.files.get("avatar")
    if upload is None:
        raise ValidationError("multipart field 'avatar' is required", field="avatar")
    url = avatars.save_avatar(g.user, upload.stream)
    return jsonify({"avatar_url": url})


@bp.get("/api/users")
@api_admin_required
def users():
    limit, offset = page_args()
    rows, total = user_services.list_users(request.args.get("q"), limit, offset)
    return jsonify({"users": [u.to_dict() for u in rows], "total": total})


@bp.post("/api/users/<int:user_id>/active")
@api_admin_required
def set_active(user_id: int):
    data = json_body()
    user = user_services.find_user_ref(user_id)
    user_services.set_active(g.user, user, get_bool(data, "active"))
    return jsonify({"user": user.to_dict()})


@bp.post("/api/users/<int:user_id>/role")
@api_admin_required
def set_role(user_id: int):
    data = json_body()
    user = user_services.find_user_ref(user_id)
    user_services.set_role(g.user, user, get_str(data, "role", max_len=16))
    return jsonify({"user": user.to_dict()})


@bp.errorhandler(AuthenticationRequired)
def _auth_error(err):
    return error_json(err.message, 401, err.code, **err.extra)


from portal.accounts import membership_api, mfa_api  # noqa: E402,F401  (routes on this blueprint)
