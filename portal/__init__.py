"""The web terminal portal: create_app() builds the Flask app from config and blueprints."""

from __future__ import annotations

import os
from importlib import metadata

from flask import Flask

__all__ = ["create_app", "__version__"]

try:
    __version__ = metadata.version("webterm-portal")
except metadata.PackageNotFoundError:  # running from a tree that was not pip-installed
    __version__ = "0.1.0"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _up_to(limit: str) -> str:
    """A regex for the decimal numbers 0..limit (leading zeros allowed, as int() allows)."""
    n = len(limit)
    alternatives = [rf"\d{{1,{n - 1}}}"] if n > 1 else []
    for i, digit in enumerate(limit):  # n digits: equal to `limit` before i, below it at i
        low = 1 if i == 0 else 0
        if int(digit) > low:
            alternatives.append(rf"{limit[:i]}[{low}-{int(digit) - 1}]\d{{{n - i - 1}}}")
    alternatives.append(limit)
    return "0*(?:" + "|".join(alternatives) + ")"


#: The path segment of a database id: 0..2**31-1 (INTEGER in both SQLite and PostgreSQL).
ID_REGEX = _up_to(str(2**31 - 1))


def create_app(config: dict | None = None) -> Flask:
    instance = (
        (config or {}).get("PORTAL_INSTANCE_PATH")
        or os.environ.get("PORTAL_INSTANCE_PATH")
        or os.path.join(os.getcwd(), "instance")
    )
    instance = os.path.abspath(instance)
    from portal.config import check_secrets, load_config, private_dir

    private_dir(instance)  # secrets, the SQLite database, recordings: 0700 when created here
    app = Flask(
        __name__,
        instance_path=instance,
        template_folder=os.path.join(ROOT, "templates"),
        static_folder=os.path.join(ROOT, "static"),
    )
    app.config.update(load_config(instance, config))
    if config:
        app.config.update(config)
    check_secrets(app.config)  # too short a secret stops the start, whatever its source
    for folder in ("PORTAL_RECORDINGS_DIR", "PORTAL_UPLOADS_DIR"):
        private_dir(app.config[folder])
    app.config["PORTAL_VERSION"] = __version__

    from portal import logs

    if not app.debug and not app.testing:
        logs.configure(os.environ.get("PORTAL_LOG_FORMAT", "text").strip().lower())

    if app.config["PORTAL_TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = int(app.config["PORTAL_TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)

    from portal import web
    from portal.extensions import csrf, db, limiter, login_manager, sock

    db.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "accounts.login"
    # No flask-login session protection: its "basic" mode only marks `_fresh` false (the
    # portal's freshness is the step-up's `mfa_at`, stepup.py), and that write made any
    # request loading current_user (the service worker script) send an older cookie back
    # over a passkey ceremony's pending challenge. "strong" would sign a phone out whenever
    # its network changed. Sessions end by sign-out, token_version and expiry.
    login_manager.session_protection = None
    limiter.init_app(app)
    sock.init_app(app)
    web.init_app(app)
    from portal import metrics

    metrics.init_app(app)
    logs.init_app(app)

    from portal.accounts import oauth

    oauth.configure(app)

    @login_manager.user_loader
    def _load_user(ident: str):
        from portal.accounts.models import User

        try:
            uid, ver = (int(x) for x in ident.split(":", 1))
        except ValueError:
            return None
        user = db.session.get(User, uid)
        if user is None or not user.is_active or user.token_version != ver:
            return None
        return user

    # Every <int:...> in a route is a database id: bounded, so a huge number is a 404, never an
    # overflow deep in the database driver. The bound is in the regex, not only in `max`:
    # Werkzeug matches a path against a rule's regex before it runs the converter, so with
    # `max` alone a path like DELETE /api/community/issues/2147483648 matched the DELETE rule
    # by regex, failed its converter, and the GET rule of the same path then made it a 405.
    from werkzeug.routing import IntegerConverter

    class IdConverter(IntegerConverter):
        regex = ID_REGEX

        def __init__(self, map, *args, **kwargs):
            kwargs.setdefault("max", 2**31 - 1)
            super().__init__(map, *args, **kwargs)

    app.url_map.converters["int"] = IdConverter
    _register_blueprints(app)
    _register_template_helpers(app)

    from portal import cli

    cli.init_app(app)
    return app


def _register_blueprints(app: Flask) -> None:
    import importlib

    from portal.accounts.api import bp as accounts_api
    from portal.accounts.views import bp as accounts_views
    from portal.health import bp as health
    from portal.pwa import bp as pwa

    for bp in (health, accounts_api, accounts_views, pwa):
        app.register_blueprint(bp)
    # Every feature package registers its blueprints, CLI and hooks: portal.<feature>.register(app).
    for feature in ("dashboard", "machines", "terminal", "community", "openapi", "audit", "files"):
        importlib.import_module(f"portal.{feature}").register(app)


def _register_template_helpers(app: Flask) -> None:
    from flask_wtf.csrf import generate_csrf

    from portal.db import iso

    @app.context_processor
    def _globals():
        return {
            "csrf_token": generate_csrf,
            "portal_version": __version__,
        }

    @app.template_filter("iso")
    def _iso(value):
        return iso(value) or ""

    @app.template_filter("when")
    def _when(value):
        return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"
