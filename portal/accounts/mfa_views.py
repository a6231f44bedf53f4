"""HTML face of the second factor: the sign-in step after the password (or OAuth), and the
"Two-step sign-in" page of the profile (authenticator app, recovery codes, passkeys). Routes
hang on the accounts blueprint. The passkey ceremonies themselves run in static/js/passkeys.js
against the JSON routes in mfa_api.py."""

from __future__ import annotations

from flask import (
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from portal.accounts import factors, mfa, passkeys, signin, stepup
from portal.accounts.api import auth_limit
from portal.accounts.models import User
from portal.accounts.views import bp
from portal.errors import PortalError
from portal.extensions import db, limiter
from portal.web import admin_required, error_json, is_htmx, login_required, safe_next, wants_json


@bp.route("/login/mfa", methods=["GET", "POST"])
@limiter.limit(auth_limit, methods=["POST"])
def login_mfa():
    user, pending = signin.pending_user()
    if user is None:
        flash("Sign in again: the second step expired.", "error")
        return redirect(url_for("accounts.login"))
    if request.method == "POST":
        try:
            factors.verify_code(user, request.form.get("code"))
        except PortalError as err:
            errors = {"code": err.message}
            return _login_mfa_page(user, errors), (429 if err.status == 429 else 401)
        return redirect(signin.complete_mfa_sign_in(user, pending), 303)
    return _login_mfa_page(user, {})


def _login_mfa_page(user: User, errors: dict):
    return render_template(
        "accounts/login_mfa.html",
        errors=errors,
        form={},
        passkey=factors.has_passkey(user),
        codes=factors.has_totp(user) or factors.recovery_codes_left(user) > 0,
    )


# ---------------------------------------------------------------- profile: two-step sign-in


def _page(status: int = 200, errors: dict | None = None, **ctx):
    user = g.user
    uri = ctx.pop("uri", None) or mfa.pending_uri(user)
    if uri and not factors.has_totp(user):
        ctx.setdefault("qr", mfa.qr_svg(uri))
        ctx.setdefault("secret", mfa.secret_of_uri(uri))
    keys = passkeys.user_passkeys(user)
    return render_template(
        "accounts/mfa.html",
        user=user,
        enrolled=factors.has_totp(user),
        any_factor=factors.has_factor(user),
        passkeys=keys,
        has_password=bool(user.password_hash),
        codes_left=factors.recovery_codes_left(user),
        required=factors.required_for_everyone(),
        errors=errors or {},
        **ctx,
    ), status


@bp.get("/profile/mfa")
@login_required
def profile_mfa():
    return _page()


@bp.post("/profile/mfa/totp")
@login_required
def profile_mfa_begin():
    try:
        started = mfa.begin_totp(g.user)
    except stepup.StepUpRequired:  # beside a passkey: the prompt, then this form again
        raise
    except PortalError as err:
        return _page(err.status, {"_form": err.message})
    return _page(uri=started["otpauth_uri"])


@bp.post("/profile/mfa/totp/confirm")
@login_required
def profile_mfa_confirm():
    try:
        codes = mfa.confirm_totp(g.user, request.form.get("code"))
    except PortalError as err:
        return _page(422 if err.status == 400 else err.status, {"code": err.message})
    stepup.mark_fresh()
    return _page(recovery_codes=codes)


@bp.post("/profile/mfa/totp/remove")
@login_required
def profile_mfa_remove():
    try:
        mfa.remove_totp(g.user, request.form.get("password"), request.form.get("passkey_assertion"))
    except PortalError as err:
        return _page(422 if err.status == 400 else err.status, {"remove_password": err.message})
    flash("The authenticator app was removed.", "success")
    return redirect(url_for("accounts.profile_mfa"), 303)


@bp.post("/profile/mfa/recovery-codes")
@login_required
def profile_mfa_regenerate():
    try:
        codes = mfa.regenerate_recovery_codes(
            g.user, request.form.get("codes_password"), request.form.get("passkey_assertion")
        )
    except PortalError as err:
        return _page(422 if err.status == 400 else err.status, {"codes_password": err.message})
    return _page(recovery_codes=codes)


@bp.post("/profile/mfa/passkeys/<int:passkey_id>/rename")
@login_required
def profile_passkey_rename(passkey_id: int):
    try:
        passkeys.rename(g.user, passkey_id, request.form.get("name"))
    except PortalError as err:
        return _page(422 if err.status == 400 else err.status, {f"name_{passkey_id}": err.message})
    flash("Passkey renamed.", "success")
    return redirect(url_for("accounts.profile_mfa") + "#passkeys", 303)


@bp.post("/profile/mfa/passkeys/<int:passkey_id>/remove")
@login_required
def profile_passkey_remove(passkey_id: int):
    try:
        mfa.remove_passkey(
            g.user,
            passkey_id,
            password=request.form.get("password"),
            passkey=request.form.get("passkey_assertion"),
        )
    except PortalError as err:
        status = 422 if err.status == 400 else err.status
        return _page(status, {f"remove_{passkey_id}": err.message}, open_remove=passkey_id)
    flash("The passkey was removed.", "success")
    return redirect(url_for("accounts.profile_mfa") + "#passkeys", 303)


# ---------------------------------------------------------------- step-up prompt


#: The response header of an in-place prompt: static/js/stepup.js opens the dialog of
#: base.html on it, checks the code at /step-up, then sends the same request again.
STEP_UP_HEADER = "X-Step-Up"
#: A page's own fetch (not htmx) that can show that dialog asks for it with this header.
INLINE_REQUEST_HEADER = "X-Step-Up-Prompt"


def _wants_inline_prompt() -> bool:
    """An htmx request (or a page fetch that says it can) gets the dialog in place, as long
    as a code can answer it: a user who has no factor yet is sent to the page instead."""
    if not (is_htmx() or request.headers.get(INLINE_REQUEST_HEADER) == "inline"):
        return False
    from flask_login import current_user

    return current_user.is_authenticated and factors.has_factor(current_user)


def _wants_json_answer() -> bool:
    """The dialog's own POST to /step-up asks for JSON (fetch with Accept: application/json)."""
    return request.accept_mimetypes.best == "application/json"


@bp.app_errorhandler(stepup.StepUpRequired)
def _step_up_prompt(err: stepup.StepUpRequired):
    """JSON: 401 {error, step_up_required}. htmx: 401 with `X-Step-Up: required`,
    `HX-Reswap: none` (nothing is swapped) and the prompt as its body: the page shows it in
    the dialog of base.html and sends the request again once the code is checked. A page: a
    small prompt that continues the action (a form is re-sent with the code; a page is opened
    again once the code is checked)."""
    if wants_json():
        return error_json(err.message, 401, err.code, **err.extra)
    db.fail_request("step-up required")
    if _wants_inline_prompt():
        body = render_template(
            "accounts/step_up_dialog.html",
            action=url_for("accounts.step_up"),
            passkey=_user_has_passkey(),
        )
        resp = make_response(body, 401)
        resp.headers[STEP_UP_HEADER] = "required"
        resp.headers["HX-Reswap"] = "none"
        return resp
    if is_htmx():
        back = request.headers.get("HX-Current-URL") or request.referrer or signin.home_url()
        resp = redirect(url_for("accounts.step_up", next=back))
        resp.status_code = 401
        resp.headers["HX-Redirect"] = url_for("accounts.step_up", next=back)
        return resp
    if request.method == "GET":
        ctx = {"action": url_for("accounts.step_up"), "fields": [("next", request.full_path)]}
    else:
        fields = [
            (k, v)
            for k, v in request.form.items(multi=True)
            if k not in ("csrf_token", "mfa_code", "mfa_passkey")
        ]
        ctx = {"action": request.url, "fields": fields}
    bad = request.method == "POST" and (
        request.form.get("mfa_code") or request.form.get("mfa_passkey")
    )
    return render_template(
        "accounts/step_up.html",
        error=err.message if bad else None,
        passkey=_user_has_passkey(),
        **ctx,
    ), 401


def _user_has_passkey() -> bool:
    from flask_login import current_user

    return current_user.is_authenticated and factors.has_passkey(current_user)


@bp.route("/step-up", methods=["GET", "POST"])
@login_required
@limiter.limit(auth_limit, methods=["POST"])
def step_up():
    nxt = request.values.get("next")
    if request.method == "POST":
        try:
            stepup.require(g.user, "page")
        except stepup.StepUpRequired as err:
            if _wants_json_answer():  # the dialog: the message goes next to its field
                return error_json(err.message, 401, err.code, **err.extra)
            bad = request.form.get("mfa_code") or request.form.get("mfa_passkey")
            return render_template(
                "accounts/step_up.html",
                action=url_for("accounts.step_up"),
                fields=[("next", nxt or "")],
                error=err.message if bad else None,
                passkey=_user_has_passkey(),
            ), 401
        if _wants_json_answer():
            return "", 204  # fresh now: the dialog sends the request it stood in for again
        return redirect(safe_next(nxt, signin.home_url()), 303)
    return render_template(
        "accounts/step_up.html",
        action=url_for("accounts.step_up"),
        fields=[("next", nxt or "")],
        error=None,
        passkey=_user_has_passkey(),
    )


@bp.post("/admin/mfa-required")
@admin_required
def admin_mfa_required():
    mfa.set_required_for_everyone(g.user, request.form.get("required") == "1")
    on = factors.required_for_everyone()
    flash("A second factor is now " + ("required for everyone." if on else "optional."), "success")
    return redirect(url_for("accounts.admin_users"), 303)
