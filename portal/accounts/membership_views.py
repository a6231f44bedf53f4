"""HTML face of membership: the invite sign-up page, the forced password change, and the
Users page's invites, "create a user" and "reset password" parts (HTMX partials).
Routes hang on the accounts blueprint (endpoints stay `accounts.*`)."""

from __future__ import annotations

from flask import (
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user

from portal.accounts import membership, oauth, users
from portal.accounts.api import auth_limit
from portal.accounts.membership_api import invite_url
from portal.accounts.models import User
from portal.accounts.signin import home_url
from portal.accounts.stepup import StepUpRequired
from portal.accounts.views import bp, users_table
from portal.errors import PortalError
from portal.extensions import db, limiter
from portal.web import admin_required, error_json, is_htmx, login_required


def _message(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------- the invite link


def _invite_page(token, invite=None, status: int = 200, errors: dict | None = None):
    ctx = {
        "providers": oauth.providers(),
        "signup_open": True,
        "invite": invite,
        "invite_token": token if invite is not None else None,
        "invite_error": None,
        "limits": users.FORM_LIMITS,
        "errors": errors or {},
        "form": request.form if request.method == "POST" else {},
    }
    if invite is None:
        try:
            ctx["invite"] = membership.find_invite(token)
            ctx["invite_token"] = token
        except PortalError as err:
            ctx["invite_error"] = _message(err.message)
            status = err.status
    return render_template("accounts/signup.html", **ctx), status


@bp.route("/invite", methods=["GET", "POST"])
@limiter.limit(auth_limit, methods=["POST"])
def invite():
    """The page an invite link opens (`/invite?token=inv_...`). It works while sign-up is
    closed; the link is spent by the account it creates."""
    token = request.values.get("token", "")
    if current_user.is_authenticated:
        flash("You are already signed in; sign out first to use an invite link.", "error")
        return redirect(home_url())
    if request.method == "GET":
        return _invite_page(token)
    f = request.form
    if f.get("password") != f.get("password_confirm"):
        errors = {"password_confirm": "the passwords do not match"}
        return _invite_page(token, status=422, errors=errors)
    try:
        user = membership.sign_up(
            email=f.get("email", ""),
            username=f.get("username", ""),
            password=f.get("password"),
            invite=token,
        )
    except membership.InviteRefused as err:
        if err.field:  # the invite is for another address: say so next to the field
            return _invite_page(token, status=422, errors={err.field: err.message})
        # Says why the link cannot be used (a 4xx either way: the boundary rolls back).
        return _invite_page(token, status=err.status, errors={"_form": err.message})
    except PortalError as err:
        status, errors = _refusal(err, "_form")
        return _invite_page(token, status=status, errors=errors)
    db.commit_now("the new account must exist before its id goes into the session cookie")
    login_user(user)
    flash("Welcome! Your account is ready.", "success")
    return redirect(home_url(), 303)


@bp.get("/invite/oauth/<name>")
@limiter.limit(auth_limit)
def invite_oauth(name: str):
    """ "Continue with <provider>" from an invite page: the invite waits in the session for the
    provider's callback, which creates the account through it."""
    if name not in oauth.providers():
        abort(404)
    token = request.args.get("token", "")
    try:
        membership.find_invite(token)
    except PortalError:
        return redirect(url_for("accounts.invite", token=token))
    session["oauth_intent"] = "login"
    session["oauth_next"] = ""
    session["oauth_invite"] = token
    redirect_uri = url_for("accounts.oauth_callback", name=name, _external=True)
    return oauth.client(name).authorize_redirect(redirect_uri)


# ---------------------------------------------------------------- forced password change

_GATE_OPEN = {
    "accounts.change_password",
    "accounts.logout",
    "accounts.avatar",
    "accounts_api.login",
    "accounts_api.signup",
    "accounts_api.refresh",
    "static",
}


@bp.before_app_request
def _password_change_gate():
    """A browser session whose password an admin set may only choose a new one (or sign out)."""
    if request.endpoint in _GATE_OPEN or request.path == "/health":
        return None
    if request.path.startswith("/api/") and (
        request.headers.get("Authorization") or request.headers.get("X-API-Key")
    ):
        return None  # a token's own user is checked where the token is issued
    if not current_user.is_authenticated or not current_user.must_change_password:
        return None
    target = url_for("accounts.change_password")
    if request.path.startswith("/api/"):
        return error_json(
            "your password was set by an admin and must be changed first",
            403,
            "password_change_required",
            password_change_required=True,
        )
    if is_htmx():
        resp = redirect(target)
        resp.status_code = 401
        resp.headers["HX-Redirect"] = target
        return resp
    return redirect(target)


@bp.route("/password/change", methods=["GET", "POST"])
@login_required
def change_password():
    if not g.user.must_change_password:
        return redirect(url_for("accounts.profile"))
    errors: dict = {}
    if request.method == "POST":
        f = request.form
        if f.get("new_password") != f.get("new_password_confirm"):
            errors = {"new_password_confirm": "the new passwords do not match"}
        else:
            try:
                membership.change_required_password(g.user, f.get("new_password"))
            except PortalError as err:
                errors = {err.field or "_form": err.message}
        if not errors:
            login_user(g.user)  # the old sessions ended with the temporary password
            flash("Password changed. Welcome!", "success")
            return redirect(home_url(), 303)
    status = 422 if errors else 200
    return render_template("accounts/change_password.html", errors=errors, form={}), status


# ---------------------------------------------------------------- admin: the Users page


def _refusal(err: PortalError, where: str) -> tuple[int, dict]:
    """A refused form's status (400 -> 422: htmx swaps a 4xx in place) and its message, by
    field (`where` when the error names none)."""
    return 422 if err.status in (400, 422) else err.status, {err.field or where: err.message}


def _admin_card(template: str, status: int = 200, **ctx):
    """A card of the Users page after a POST: the card alone (HTMX) or the whole page."""
    if is_htmx():
        return render_template(template, **ctx), status
    return users_table(status, page=ctx)


def _invites_partial(status: int = 200, **ctx):
    rows, total = membership.list_invites(g.user)
    return _admin_card("admin/_invites.html", status, invites=rows, invites_total=total, **ctx)


@bp.post("/admin/invites")
@admin_required
def admin_invite_create():
    try:
        invite, raw = membership.create_invite(g.user, request.form)
    except PortalError as err:
        status, errors = _refusal(err, "_invite")
        return _invites_partial(status, invite_errors=errors, invite_form=request.form)
    # Shown this once: only the token's hash is kept.
    return _invites_partial(new_invite_url=invite_url(raw), new_invite=invite)


@bp.post("/admin/invites/<int:invite_id>/revoke")
@admin_required
def admin_invite_revoke(invite_id: int):
    invite = membership.get_invite(g.user, invite_id)
    try:
        membership.revoke_invite(g.user, invite)
    except PortalError as err:
        return _invites_partial(err.status, invite_errors={"_invite": err.message})
    return _invites_partial()


@bp.post("/admin/users/new")
@admin_required
def admin_user_create():
    try:
        user, generated = membership.admin_create_user(g.user, request.form)
    except StepUpRequired:  # a page asks for the code (accounts/mfa_views.py)
        raise
    except PortalError as err:
        status, errors = _refusal(err, "_create")
        return _admin_card(
            "admin/_create_user.html", status, create_errors=errors, create_form=request.form
        )
    body, status = _admin_card("admin/_create_user.html", created=user, created_password=generated)
    if is_htmx():  # the users table below refreshes itself on this event
        return body, status, {"HX-Trigger": "users-changed"}
    return body, status


@bp.post("/admin/users/<int:user_id>/reset-password")
@admin_required
def admin_user_reset_password(user_id: int):
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    try:
        temporary = membership.admin_reset_password(g.user, user)
    except StepUpRequired:  # a page asks for the code (accounts/mfa_views.py)
        raise
    except PortalError as err:
        return users_table(err.status, err.message)
    return users_table(reset_user=user, reset_password=temporary)
