"""Small calls on a flask-sock socket shared by the terminal and watch routes.

Close codes, JSON frames, a refusal (`error` frame then close), TCP_NODELAY, and the wait
for the socket library's reader thread before the WSGI server takes the connection back.
"""

from __future__ import annotations

import functools
import json
import socket
import time

from flask import Response, request

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


def wsgi_socket(environ) -> socket.socket | None:
    """The connection's socket as the WSGI server passes it (the keys flask-sock's server
    reads it from): for TCP_NODELAY, cutting a stuck send, and seeing the reader finish."""
    sock = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    return sock if isinstance(sock, socket.socket) else None


def nodelay(sock: socket.socket | None) -> None:
    """Small frames (an echoed keystroke) leave at once instead of waiting for an ACK."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def reader_last(route):
    """The socket library's reader thread has the last word: when a route returns after the
    socket closed (a close from the client, a protocol error, our own close), wait for the
    reader to be done with the connection (it closes the socket last, after its close
    frame) before the WSGI server gets it back. Without this, the server could write to (or
    close) the connection first and the client would never see the close code (the dev
    server even writes an HTTP response into the socket)."""

    @functools.wraps(route)
    def wrapper(ws, *args, **kwargs):
        raw = wsgi_socket(request.environ)
        try:
            return route(ws, *args, **kwargs)
        finally:
            # Every way out of these routes closes the socket or follows its end. After a
            # close of our own the reader ends on the client's reply; the bound is for a
            # client that never answers. (Not `ws.connected`: the reader sets it again
            # after each message it takes, so it can read True just after our close.)
            if raw is not None:
                deadline = time.monotonic() + 2.0
                while raw.fileno() != -1 and time.monotonic() < deadline:
                    time.sleep(0.01)

    return wrapper


def send_json(ws, obj) -> None:
    ws.send(json.dumps(obj, separators=(",", ":")))


def close(ws, code: int = CLOSE_NORMAL, message: str | None = None) -> None:
    try:
        ws.close(reason=code, message=(message or "")[:120] or None)
    except Exception:  # noqa: S110 - already closed
        pass


def refuse(ws, message: str, code: int = CLOSE_POLICY) -> None:
    try:
        send_json(ws, {"type": "error", "message": message})
    except Exception:  # noqa: S110
        pass
    close(ws, code, message)


def plain(status: int, message: str) -> Response:
    """A refusal before the upgrade: plain HTTP, never a 101."""
    return Response(message + "\n", status=status, mimetype="text/plain")
