"""Request ids and the optional JSON log format (PORTAL_LOG_FORMAT=json).

Every request gets an id: the client's `X-Request-Id` when it is short and plain, else a new
one; it goes back in the response's `X-Request-Id` and onto every log line written while the
request runs, including the terminal's pump thread, which starts inside the socket's request.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid

from flask import g, request

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "portal_request_id", default=None
)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(fmt: str) -> None:
    """Root logging for a served app: plain text (default) or one JSON object a line."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def init_app(app) -> None:
    @app.before_request
    def _request_id():
        given = request.headers.get("X-Request-Id", "")
        rid = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        g.request_id = rid
        REQUEST_ID.set(rid)

    @app.after_request
    def _echo_request_id(resp):
        rid = g.get("request_id")
        if rid:
            resp.headers["X-Request-Id"] = rid
        return resp
