"""Who is connecting to a socket route, decided before the upgrade.

A refused socket gets a plain HTTP 401/403, never a 101: the browser's session cookie with
an Origin of the portal's own, else a single-use `?ticket=`, else `?token=` (JWT or API key).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, g, request
from flask_login import current_user

from portal.accounts.tokens import user_from_token
from portal.terminal import services
from portal.terminal.ws_common import plain


def _portal_origins() -> set[str]:
    scheme = "https" if request.is_secure else "http"
    origins = {f"{scheme}://{request.host}".lower()}
    base = current_app.config.get("PORTAL_BASE_URL")
    if base:
        parts = urlsplit(base)
        origins.add(f"{parts.scheme}://{parts.netloc}".lower())
    return origins


def authenticate():
    """Before the upgrade of every socket route: sets g.ws_user (and g.ws_ticket_agent, the
    machine a ticket is for), or answers a plain 401/403."""
    g.ws_user = None
    g.ws_ticket_agent = None
    # No permessage-deflate on terminal sockets: zlib on every keystroke and echo costs
    # latency and server CPU, and compressing attacker-influenced output in one context with
    # secrets on the same screen is a compression side channel (CRIME/BREACH). The socket
    # library negotiates from these headers, so the offer is dropped before the upgrade.
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    ticket = request.args.get("ticket")
    token = request.args.get("token")
    if current_user.is_authenticated and not ticket and not token:
        origin = (request.headers.get("Origin") or "").rstrip("/").lower()
        if origin not in _portal_origins():
            return plain(403, "cross-site WebSocket refused")
        g.ws_user = current_user._get_current_object()
        g.ws_via = "session"
        return None
    if ticket:
        found = services.redeem_ticket(ticket)
        if found is None:
            return plain(401, "invalid or expired ticket")
        g.ws_user, g.ws_ticket_agent = found
        g.ws_via = "ticket"
        return None
    if token:
        user = user_from_token(token)
        if user is None:
            return plain(401, "invalid token")
        g.ws_user = user
        g.ws_via = "token"
        return None
    if current_user.is_authenticated:  # pragma: no cover - handled above
        return None
    return plain(401, "authentication required")
