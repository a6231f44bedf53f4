"""What every face shares: auth decorators, JSON body parsing, error mapping, headers, CSRF."""

from __future__ import annotations

import functools
import logging
import time
from urllib.parse import urlsplit

from flask import (
    Response,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from portal.accounts.tokens import user_from_token
from portal.errors import (
    AccessDenied,
    AuthenticationRequired,
    PortalError,
    ValidationError,
)
from portal.extensions import csrf, limiter, login_manager
from portal.validation import get_int

log = logging.getLogger(__name__)


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, except that an unchanged session is sent again (to
    slide its expiry) only with a page navigation, never with a static file, the service
    worker script, an HTMX partial or a fetch. Those run beside requests that change the
    session (a passkey ceremony's pending challenge, a step-up marking the session fresh):
    one answered after such a change would put the older cookie back in the browser, and the
    step-up's replayed action was then refused again."""

    def should_set_cookie(self, app, session) -> bool:
        if session.modified:
            return True
        if not super().should_set_cookie(app, session):
            return False
        dest = request.headers.get("Sec-Fetch-Dest")
        if dest is not None:  # what browsers say the request is for
            return dest == "document"
        return (
            request.method == "GET"
            and request.endpoint != "static"
            and not is_htmx()
            and not wants_json()
        )


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/health"


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def error_json(message: str, status: int, code: str | None = None, **extra) -> Response:
    body = {"error": message}
    if code:
        body["code"] = code
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    return resp


# ---------------------------------------------------------------- request body


def json_body() -> dict:
    """The JSON object of the request, or a 4xx. Forms cannot forge this cross-site:
    only a JSON content type is accepted."""
    if not request.is_json:
        raise PortalError("Content-Type must be application/json")
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # absurdly nested JSON: `silent` only covers ValueError
        raise ValidationError("request body is nested too deeply") from None
    if data is None:
        raise ValidationError("request body is not valid JSON")
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object")
    return data


def page_args(default_limit: int = 50, max_limit: int = 200) -> tuple[int, int]:
    limit = get_int(request.args, "limit", default=default_limit, min_value=1, max_value=max_limit)
    offset = get_int(request.args, "offset", default=0, min_value=0, max_value=10_000_000)
    return limit, offset


# ---------------------------------------------------------------- auth


def _bearer_value() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    key = request.headers.get("X-API-Key")
    return key.strip() if key else None


def api_user():
    """The caller of a JSON endpoint: Bearer JWT / API key, else the browser session
    (then CSRF applies to unsafe methods). None when unauthenticated."""
    if "api_user" in g:
        return g.api_user

    user = None
    token = _bearer_value()
    if token:
        user = user_from_token(token)
        g.auth_via = "token"
    elif current_user.is_authenticated:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            csrf.protect()
        user = current_user._get_current_object()
        g.auth_via = "session"
    g.api_user = user
    return user


def api_login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        user = api_user()
        if user is None:
            return error_json("authentication required", 401, "unauthenticated")
        g.user = user
        return view(*args, **kwargs)

    return wrapped


def api_admin_required(view):
    @functools.wraps(view)
    @api_login_required
    def wrapped(*args, **kwargs):
        if not g.user.is_admin:
            return error_json("admin only", 403, "forbidden")
        return view(*args, **kwargs)

    return wrapped


def login_required(view):
    """Pages: redirect to login with `next`; HTMX: HX-Redirect; JSON: 401."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        g.user = current_user._get_current_object()
        return view(*args, **kwargs)

    return wrapped


def admin_required(view):
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not g.user.is_admin:
            raise AccessDenied("admins only")
        return view(*args, **kwargs)

    return wrapped


def safe_next(target: str | None, default: str) -> str:
    """Only same-site relative paths: no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def _unauthorized():
    if wants_json():
        return error_json("authentication required", 401, "unauthenticated")
    login = url_for("accounts.login", next=request.full_path.rstrip("?"))
    if is_htmx():
        resp = Response(status=401)
        resp.headers["HX-Redirect"] = login
        return resp
    return redirect(login)


# ---------------------------------------------------------------- install


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)


def init_app(app) -> None:
    login_manager.unauthorized_handler(_unauthorized)
    app.session_interface = SessionInterface()

    from portal.formlimits import FormLimits

    # maxlength attributes: the server's own limits (a global, so imported macros see it)
    app.jinja_env.globals["maxlen"] = FormLimits()

    @app.before_request
    def _csrf_for_pages():
        # One mechanism: the form field or the X-CSRFToken header (set once on <body hx-headers>).
        # JSON endpoints check it themselves in api_user(), only when the browser session is used.
        if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
            return None
        if request.path.startswith("/api/") or request.path == "/health":
            return None
        csrf.protect()
        return None

    @app.after_request
    def _security_headers(resp: Response):
        h = resp.headers
        csp = CSP
        if g.get("csp_allow_wasm"):
            # asciinema-player compiles WebAssembly; this allows wasm only, never JS eval.
            csp = csp.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'")
        h.setdefault("Content-Security-Policy", csp)
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if request.is_secure:
            h.setdefault("Strict-Transport-Security", "max-age=31536000")
        if resp.mimetype == "text/html":
            resp.vary.add("HX-Request")
            h.setdefault("Cache-Control", "no-store")
        return resp

    @app.errorhandler(PortalError)
    def _portal_error(err: PortalError):
        if wants_json():
            extra = {"field": err.field} if err.field else {}
            extra.update(err.extra)
            resp = error_json(err.message, err.status, err.code, **extra)
        elif isinstance(err, AuthenticationRequired):
            return _unauthorized()
        else:
            resp = render_error(err.status, err.message)
        if err.status == 429:
            resp = make_response(resp)
            resp.headers.setdefault("Retry-After", "5")
        return resp

    @app.errorhandler(CSRFError)
    def _csrf_error(err: CSRFError):
        msg = "the form expired or was sent from another site; reload the page and try again"
        if wants_json():
            return error_json(msg, 400, "csrf")
        return render_error(400, msg)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        code = err.code or 500
        messages = {
            400: "bad request",
            404: "not found",
            405: "method not allowed",
            413: "the request is too large",
            415: "unsupported content type",
            429: "too many requests; slow down and try again shortly",
        }
        msg = messages.get(code, err.name.lower())
        retry_after = None
        if code == 404 and not wants_json():
            msg = f"there is no page at {request.path[:200]}"
        if code == 429:
            retry_after = _retry_after_seconds(err)
            if retry_after:
                msg = f"too many requests; try again in {_seconds_in_words(retry_after)}"
        if wants_json():
            resp = error_json(msg, code, err.name.lower().replace(" ", "_"))
        else:
            resp = make_response(render_error(code, msg))
        if retry_after:
            resp.headers["Retry-After"] = str(retry_after)
        if code == 405 and getattr(err, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(err.valid_methods)
        return resp

    @app.errorhandler(sa_exc.TimeoutError)
    def _db_busy(err: Exception):
        # Every pooled DB connection stayed busy for the pool's whole timeout: an overload,
        # not a bug in the request. Say so and when to retry, instead of a 500.
        log.warning("database connection pool exhausted on %s %s", request.method, request.path)
        msg = "the server is busy; try again in a moment"
        resp = make_response(
            error_json(msg, 503, "busy") if wants_json() else render_error(503, msg)
        )
        resp.headers["Retry-After"] = "5"
        return resp

    @app.errorhandler(sa_exc.OperationalError)
    @app.errorhandler(sa_exc.InterfaceError)
    def _db_down(err: Exception):
        # The database cannot be reached (restarting, network cut): nothing is wrong with
        # the request. pool_pre_ping replaces the dead connections once it is back.
        log.warning("database unreachable on %s %s: %s", request.method, request.path, err.orig)
        msg = "the database is unreachable; try again in a moment"
        resp = make_response(
            error_json(msg, 503, "database_unavailable") if wants_json() else render_error(503, msg)
        )
        resp.headers["Retry-After"] = "5"
        return resp

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return error_json("internal error", 500, "internal")
        return render_error(500, "something went wrong on our side")


def _retry_after_seconds(err) -> int | None:
    """Seconds until the breached limit resets (flask-limiter's public current_limit)."""
    current = limiter.current_limit
    if current is not None and current.reset_at:
        return max(1, int(current.reset_at - time.time()) + 1)
    value = getattr(err, "retry_after", None)
    return int(value) if value else None


def _seconds_in_words(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = round(seconds / 60)
    return f"{minutes} minutes"


def render_error(status: int, message: str):
    if is_htmx():
        # Show the message in place (the page's flash area listens for this).
        resp = Response(
            render_template("_flash_oob.html", messages=[("error", message)]), status=status
        )
        resp.headers["HX-Reswap"] = "none"
        return resp
    return render_template("error.html", status=status, message=message), status
