"""HTML face of the dashboard: the page, and the live partial it polls every 10 seconds."""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, url_for
from flask_login import current_user

from portal.dashboard import services
from portal.web import login_required

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def root():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    return redirect(url_for("accounts.login"))


def _ctx() -> dict:
    return services.overview(g.user)


@bp.get("/dashboard")
@login_required
def index():
    return render_template("dashboard/index.html", **_ctx())


@bp.get("/dashboard/live")
@login_required
def live():
    return render_template("dashboard/_live.html", **_ctx())
