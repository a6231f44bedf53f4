"""JSON face of the second factor: /api/profile/mfa/* and the admin's switches.
Routes hang on the accounts API blueprint; the rules live in portal/accounts/mfa.py."""

from __future__ import annotations

from flask import g, jsonify

from portal.accounts import mfa
from portal.accounts import users as user_services
from portal.accounts.api import bp
from portal.validation import get_bool
from portal.web import api_admin_required, api_login_required, json_body


@bp.get("/api/profile/mfa")
@api_login_required
def mfa_status():
    return jsonify(
        {
            "totp": mfa.has_factor(g.user),
            "recovery_codes_left": mfa.recovery_codes_left(g.user),
            "required": mfa.required_for_everyone(),
        }
    )


@bp.post("/api/profile/mfa/totp")
@api_login_required
def mfa_totp_begin():
    return jsonify(mfa.begin_totp(g.user)), 201


@bp.post("/api/profile/mfa/totp/confirm")
@api_login_required
def mfa_totp_confirm():
    codes = mfa.confirm_totp(g.user, json_body().get("code"))
    return jsonify({"recovery_codes": codes})


@bp.delete("/api/profile/mfa/totp")
@api_login_required
def mfa_totp_remove():
    mfa.remove_totp(g.user, json_body().get("password"))
    return jsonify({"ok": True})


@bp.post("/api/profile/mfa/recovery-codes")
@api_login_required
def mfa_recovery_regenerate():
    codes = mfa.regenerate_recovery_codes(g.user, json_body().get("password"))
    return jsonify({"recovery_codes": codes})


@bp.post("/api/users/<int:user_id>/mfa/reset")
@api_admin_required
def mfa_admin_reset(user_id: int):
    user = user_services.find_user_ref(user_id)
    mfa.reset_factors(g.user, user)
    return jsonify({"ok": True})


@bp.post("/api/admin/mfa-required")
@api_admin_required
def mfa_admin_required():
    mfa.set_required_for_everyone(g.user, get_bool(json_body(), "required"))
    return jsonify({"required": mfa.required_for_everyone()})
