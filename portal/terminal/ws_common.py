"""Small calls on a flask-sock socket shared by the terminal and watch routes.

Close codes, JSON frames, a refusal (`error` frame then close), TCP_NODELAY, and the wait
for the socket library's reader thread before the WSGI server takes the connection back.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import time

from flask import Response, request

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
INPUT_MAX = 64 * 1024  # bytes per input frame; larger -> close 1009


class Refusal(Exception):
    """A frame the socket is closed for: `code` (1008, 1009) and the message the client
    gets in its `error` frame and the close reason."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def too_big() -> Refusal:
    return Refusal(CLOSE_TOO_BIG, f"frame too large (limit {INPUT_MAX} bytes)")


def parse_control(msg: str, log_name: str = "") -> tuple[str, object] | None:
    """A client's JSON text frame (DESIGN.md, "Terminal socket contract") as `(kind, value)`:
    ("input", bytes), ("resize", (cols, rows)), ("ack", n) or ("ping", None); None for
    anything else (ignored). Raises Refusal for input over INPUT_MAX and for a frame nested
    too deeply for the JSON parser ('[' * 30000 fits in a frame: one log line, no traceback).
    The terminal's own socket and a relayed one (relay.py) both read frames through here."""
    try:
        frame = json.loads(msg)
    except ValueError:
        return None
    except RecursionError:
        log.warning("terminal %s: a text frame nested too deeply; socket closed", log_name)
        raise Refusal(CLOSE_POLICY, "frame nested too deeply") from None
    if not isinstance(frame, dict):
        return None
    kind = frame.get("type")
    if kind == "input":
        data = frame.get("data")
        if isinstance(data, str) and data:
            encoded = data.encode("utf-8", "replace")
            if len(encoded) > INPUT_MAX:
                raise too_big()
            return "input", encoded
    elif kind == "resize":
        c, r = frame.get("cols"), frame.get("rows")
        if type(c) is int and type(r) is int and 1 <= c <= 1000 and 1 <= r <= 1000:
            return "resize", (c, r)
    elif kind == "ack":
        n = frame.get("bytes")
        if type(n) is int and n >= 0:
            return "ack", n
    elif kind == "ping":
        return "ping", None
    return None


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
