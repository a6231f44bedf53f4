"""Extensions, created once and bound to the app in create_app()."""

from __future__ import annotations

from authlib.integrations.flask_client import OAuth
from flask import request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_sock import Sock
from flask_wtf.csrf import CSRFProtect

from portal.db import Database

db = Database()
login_manager = LoginManager()
csrf = CSRFProtect()
sock = Sock()
oauth = OAuth()


def _client_address() -> str:
    return get_remote_address() or request.remote_addr or "unknown"


limiter = Limiter(key_func=_client_address, default_limits=[])
