"""JSON face of the second factor: /api/profile/mfa/* and the admin's switches.
Routes hang on the accounts API blueprint; the rules live in the services (`mfa`, `factors`,
`passkeys`; docs/mfa.md has the order)."""

from __future__ import annotations

from flask import g, jsonify

from portal.accounts import factors, membership, mfa, passkeys, signin, tokens
from portal.accounts import users as user_services
from portal.accounts.api import auth_limit, bp
from portal.errors import AuthenticationRequired, ValidationError
from portal.extensions import limiter
from portal.validation import get_bool
from portal.web import api_admin_required, api_login_required, api_user, json_body


@bp.get("/api/profile/mfa")
@api_login_required
def mfa_status():
    return jsonify(
        {
            "totp": factors.has_totp(g.user),
            "passkeys": len(passkeys.user_passkeys(g.user)),
            "recovery_codes_left": factors.recovery_codes_left(g.user),
            "required": factors.required_for_everyone(),
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
    data = json_body()
    mfa.remove_totp(g.user, data.get("password"), data.get("passkey"))
    return jsonify({"ok": True})


@bp.post("/api/profile/mfa/recovery-codes")
@api_login_required
def mfa_recovery_regenerate():
    data = json_body()
    codes = mfa.regenerate_recovery_codes(g.user, data.get("password"), data.get("passkey"))
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
    return jsonify({"required": factors.required_for_everyone()})


# ---------------------------------------------------------------- passkeys (WebAuthn)


@bp.get("/api/profile/mfa/passkeys")
@api_login_required
def passkey_list():
    return jsonify({"passkeys": [p.to_dict() for p in passkeys.user_passkeys(g.user)]})


@bp.post("/api/profile/mfa/passkeys/options")
@api_login_required
def passkey_register_options():
    return jsonify({"options": mfa.begin_passkey(g.user)})


@bp.post("/api/profile/mfa/passkeys")
@api_login_required
def passkey_register():
    data = json_body()
    row = passkeys.finish_registration(g.user, data.get("credential"), data.get("name"))
    return jsonify({"passkey": row.to_dict()}), 201


@bp.patch("/api/profile/mfa/passkeys/<int:passkey_id>")
@api_login_required
def passkey_rename(passkey_id: int):
    row = passkeys.rename(g.user, passkey_id, json_body().get("name"))
    return jsonify({"passkey": row.to_dict()})


@bp.delete("/api/profile/mfa/passkeys/<int:passkey_id>")
@api_login_required
def passkey_remove(passkey_id: int):
    data = json_body()
    mfa.remove_passkey(
        g.user, passkey_id, password=data.get("password"), passkey=data.get("passkey")
    )
    return jsonify({"ok": True})


def _purpose(data: dict) -> str:
    purpose = data.get("purpose", "login")
    if purpose not in ("login", "mfa", "step-up", "reauth"):
        raise ValidationError("`purpose` must be login, mfa, step-up or reauth", field="purpose")
    return purpose


def _pending_mfa_user():
    user, pending = signin.pending_user()
    if user is None:
        raise AuthenticationRequired("sign in with your password first (or it expired)")
    return user, pending


@bp.post("/api/auth/passkey/options")
@limiter.limit(auth_limit)
def passkey_auth_options():
    """Options for a passkey check: `login` (passwordless, anyone), `mfa` (the second step of
    this browser's sign-in), `step-up` / `reauth` (the caller's own passkeys)."""
    data = json_body()
    purpose = _purpose(data)
    if purpose == "login":
        user = None
    elif purpose == "mfa":
        user, _pending = _pending_mfa_user()
    else:
        user = api_user()
        if user is None:
            raise AuthenticationRequired("authentication required")
    return jsonify({"options": passkeys.begin_authentication(purpose, user)})


@bp.post("/api/auth/passkey")
@limiter.limit(auth_limit)
def passkey_auth():
    """Finish a `login` (passwordless) or `mfa` (second step) check: this browser session is
    signed in; with `"tokens": true` a JWT pair (carrying `mfa_at`) is answered too. A
    step-up or re-authentication sends its assertion as `passkey` with the request it
    guards instead."""
    data = json_body()
    purpose = _purpose(data)
    if purpose in ("step-up", "reauth"):
        raise ValidationError(
            "send a step-up or re-authentication assertion as `passkey` with the request it is for",
            field="purpose",
        )
    if purpose == "mfa":
        user, pending = _pending_mfa_user()
        passkeys.finish_authentication(data.get("credential"), "mfa", user)
        nxt = signin.complete_mfa_sign_in(user, pending)
    else:
        user, _row = passkeys.finish_authentication(data.get("credential"), "login")
        nxt_arg = data.get("next")
        nxt = signin.passwordless_sign_in(user, nxt_arg if isinstance(nxt_arg, str) else None)
    body = {"user": user.to_dict(), "redirect": nxt}
    if get_bool(data, "tokens", default=False):
        membership.password_change_gate(user, None)
        body.update(tokens.token_pair(user, mfa=True))
    return jsonify(body)
