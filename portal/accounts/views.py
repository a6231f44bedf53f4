"""HTML face of accounts: sign in/up/out, OAuth, profile, and the admin's user list."""

from __future__ import annotations

import re
from pathlib import Path

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user

from portal import signals
from portal.accounts import (
    avatars,
    factors,
    identities,
    membership,
    mfa,
    oauth,
    settings,
    signin,
    tokens,
)
from portal.accounts import users as user_services
from portal.accounts.api import auth_limit
from portal.accounts.models import User
from portal.accounts.signin import home_url
from portal.accounts.stepup import StepUpRequired
from portal.errors import PortalError
from portal.extensions import db, limiter
from portal.web import admin_required, is_htmx, login_required, safe_next

bp = Blueprint("accounts", __name__)


def _form_error(template: str, err: PortalError, status: int | None = None, **ctx):
    errors = {err.field or "_form": err.message}
    return render_template(template, errors=errors, form=request.form, **ctx), status or (
        422 if err.status in (400, 422) else err.status
    )


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(auth_limit, methods=["POST"])
def login():
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next"), home_url()))
    first_run = user_services.user_count() == 0
    ctx = {
        "providers": oauth.providers(),
        "signup_open": settings.signup_open(),
        "first_run": first_run,
    }
    if request.method == "POST":
        try:
            user = user_services.authenticate(
                request.form.get("login"), request.form.get("password")
            )
        except PortalError as err:
            err.field = "password"
            return _form_error("accounts/login.html", err, 401, **ctx)
        return signin.finish_sign_in(
            user, bool(request.form.get("remember")), request.args.get("next")
        )
    return render_template("accounts/login.html", errors={}, form={}, **ctx)


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(auth_limit, methods=["POST"])
def signup():
    if current_user.is_authenticated:
        return redirect(home_url())
    is_open = settings.signup_open() or user_services.user_count() == 0
    ctx = {
        "providers": oauth.providers(),
        "signup_open": is_open,
        "limits": user_services.FORM_LIMITS,
    }
    if request.method == "POST":
        f = request.form
        errors = {}
        if is_open:
            errors = membership.signup_field_errors(
                email=f.get("email", ""),
                username=f.get("username", ""),
                password=f.get("password") or "",
            )
        if f.get("password") != f.get("password_confirm"):
            errors["password_confirm"] = "the passwords do not match"  # noqa: S105 (a message)
        if errors:
            return render_template("accounts/signup.html", errors=errors, form=f, **ctx), 422
        try:
            user = membership.sign_up(
                email=f.get("email", ""),
                username=f.get("username", ""),
                password=f.get("password"),
            )
        except PortalError as err:
            return _form_error("accounts/signup.html", err, **ctx)
        db.commit_now("the new account must exist before its id goes into the session cookie")
        login_user(user)
        flash(
            "Welcome! You are the admin of this portal."
            if user.is_admin
            else "Welcome! Your account is ready.",
            "success",
        )
        return redirect(home_url(), 303)
    return render_template("accounts/signup.html", errors={}, form={}, **ctx)


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        signals.send(signals.signed_out, user=current_user._get_current_object())
    logout_user()
    session.clear()
    flash("You are signed out.", "success")
    return redirect(url_for("accounts.login"), 303)


# ---------------------------------------------------------------- OAuth


@bp.get("/auth/oauth/<name>")
@limiter.limit(auth_limit)
def oauth_start(name: str):
    if name not in oauth.providers():
        abort(404)
    session["oauth_intent"] = "login"
    session["oauth_next"] = safe_next(request.args.get("next"), "")
    session.pop("oauth_invite", None)  # only the invite page's own button carries one
    redirect_uri = url_for("accounts.oauth_callback", name=name, _external=True)
    return oauth.client(name).authorize_redirect(redirect_uri)


@bp.get("/auth/oauth/<name>/link")
@login_required
def oauth_link(name: str):
    if name not in oauth.providers():
        abort(404)
    session["oauth_intent"] = "link"
    redirect_uri = url_for("accounts.oauth_callback", name=name, _external=True)
    return oauth.client(name).authorize_redirect(redirect_uri)


@bp.get("/auth/oauth/<name>/callback")
@limiter.limit(auth_limit)
def oauth_callback(name: str):
    if name not in oauth.providers():
        abort(404)
    intent = session.pop("oauth_intent", "login")
    nxt = session.pop("oauth_next", "")
    invite = session.pop("oauth_invite", None)
    if request.args.get("error"):
        flash("Sign-in was cancelled at the provider.", "error")
        return redirect(url_for("accounts.profile" if intent == "link" else "accounts.login"))
    try:
        ident = oauth.fetch_identity(name)
    except Exception:  # noqa: BLE001 - any protocol failure (state, nonce, PKCE, network)
        current_app.logger.warning("OAuth callback for %s failed verification", name)
        flash("Sign-in with that provider failed; please try again.", "error")
        return redirect(url_for("accounts.login"))
    label = oauth.providers()[name].label
    try:
        if intent == "link" and current_user.is_authenticated:
            identities.link_identity(current_user, name, ident["subject"], ident["email"])
            flash(f"{label} is now linked to your account.", "success")
            return redirect(url_for("accounts.profile"))
        user = identities.oauth_sign_in(
            name,
            ident["subject"],
            ident["email"],
            ident["email_verified"],
            ident["username"],
            invite=invite,
        )
    except PortalError as err:
        db.fail_request("OAuth sign-in refused; the redirect reports it")
        flash(err.message, "error")
        return redirect(url_for("accounts.profile" if intent == "link" else "accounts.login"))
    db.commit_now("the account must exist before its id goes into the session cookie")
    return signin.finish_sign_in(user, False, nxt, status=302)


# ---------------------------------------------------------------- profile


def _profile(status: int = 200, errors: dict | None = None, new_api_key: str | None = None):
    user = g.user
    linked = {i.provider: i for i in user.identities}
    return render_template(
        "accounts/profile.html",
        user=user,
        providers=oauth.providers(),
        linked=linked,
        errors=errors or {},
        avatar_max=avatars.AVATAR_MAX,
        new_api_key=new_api_key,
    ), status


@bp.get("/profile")
@login_required
def profile():
    return _profile()


@bp.post("/profile/password")
@login_required
def profile_password():
    f = request.form
    if f.get("new_password") != f.get("new_password_confirm"):
        return _profile(422, {"new_password_confirm": "the new passwords do not match"})
    try:
        user_services.change_password(g.user, f.get("current_password"), f.get("new_password"))
    except PortalError as err:
        return _profile(422, {err.field or "_password": err.message})
    login_user(g.user)  # this browser stays signed in; every other session is ended
    flash(
        "Password changed. Other sessions and tokens were signed out and your API key was revoked.",
        "success",
    )
    return redirect(url_for("accounts.profile"), 303)


@bp.post("/profile/api-key")
@login_required
def profile_api_key():
    terminal = request.form.getlist("terminal")[-1:] != ["0"]  # hidden "0" + checkbox "1"
    key = user_services.regenerate_api_key(g.user, terminal=terminal)
    # Shown this once, never stored in clear.
    return _profile(new_api_key=key)


@bp.post("/profile/avatar")
@login_required
def profile_avatar():
    upload = request.files.get("avatar")
    if upload is None or not upload.filename:
        return _profile(422, {"avatar": "choose an image file"})
    try:
        avatars.save_avatar(g.user, upload.stream)
    except PortalError as err:
        return _profile(422 if err.status != 413 else 413, {"avatar": err.message})
    flash("Avatar updated.", "success")
    return redirect(url_for("accounts.profile"), 303)


@bp.post("/profile/logout-all")
@login_required
def profile_logout_all():
    tokens.revoke_all_tokens(g.user)
    logout_user()
    flash("Signed out everywhere; your API key was revoked.", "success")
    return redirect(url_for("accounts.login"), 303)


@bp.post("/profile/unlink/<name>")
@login_required
def profile_unlink(name: str):
    try:
        identities.unlink_identity(g.user, name)
    except PortalError as err:
        return _profile(err.status if err.status != 400 else 422, {"oauth": err.message})
    flash("Provider unlinked.", "success")
    return redirect(url_for("accounts.profile"), 303)


@bp.get("/avatars/<filename>")
def avatar(filename: str):
    if not re.fullmatch(r"[0-9a-f]{32}\.png", filename):
        abort(404)
    folder = Path(current_app.config["PORTAL_UPLOADS_DIR"]) / "avatars"
    resp = send_from_directory(folder, filename, mimetype="image/png", max_age=86400)
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return resp


# ---------------------------------------------------------------- admin: users


def users_table(status: int = 200, error: str | None = None, page: dict | None = None, **extra):
    """The users table (HTMX) or the whole Users page; `page` fills the page's other parts
    (invites, "create a user"), `extra` the table's (a reset password shown once)."""
    q = (request.values.get("q") or "").strip()[: user_services.USER_SEARCH_MAX]
    users, total = user_services.list_users(q, limit=200)
    ctx = {
        "users": users,
        "total": total,
        "q": q,
        "error": error,
        "signup_open": settings.signup_open(),
        "mfa_required": factors.required_for_everyone(),
        "sole_admin_id": user_services.sole_admin_id(),  # offered neither demote nor deactivate
        **extra,
    }
    if is_htmx() and request.headers.get("HX-Target") == "users-table":
        return render_template("admin/_users_table.html", **ctx), status
    invites, invites_total = membership.list_invites(g.user)
    ctx.update(invites=invites, invites_total=invites_total)
    ctx.update(page or {})
    return render_template("admin/users.html", **ctx), status


@bp.get("/admin/users")
@admin_required
def admin_users():
    return users_table()


@bp.post("/admin/users/<int:user_id>/<action>")
@admin_required
def admin_user_action(user_id: int, action: str):
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    try:
        if action == "deactivate":
            user_services.set_active(g.user, user, False)
        elif action == "activate":
            user_services.set_active(g.user, user, True)
        elif action == "promote":
            user_services.set_role(g.user, user, "admin")
        elif action == "demote":
            user_services.set_role(g.user, user, "user")
        elif action == "mfa-reset":
            mfa.reset_factors(g.user, user)
        else:
            abort(404)
    except StepUpRequired:  # a page asks for the code (accounts/mfa_views.py)
        raise
    except PortalError as err:
        return users_table(err.status, err.message)
    return users_table()


@bp.post("/admin/signup")
@admin_required
def admin_signup():
    settings.set_signup_open(g.user, request.form.get("open") == "1")
    flash("Signup is now " + ("open." if settings.signup_open() else "closed."), "success")
    return redirect(url_for("accounts.admin_users"), 303)


from portal.accounts import membership_views, mfa_views  # noqa: E402,F401  (routes on this blueprint)
