"""The portal as it is deployed (gunicorn with portal/gunicorn_conf.py, app:app) and a real
SIGTERM: live terminals hear why they end, and their rows are closed, not left as ghosts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.test_terminal_helpers import Term, wait_for

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gunicorn_portal(app, app_config, tmp_path):
    """The portal under gunicorn on the test database (same secrets as `app`, so its
    tokens and stored machine credentials are valid there). Yields (base_url, process)."""
    port = _free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": app_config["DATABASE_URL"],
        "SECRET_KEY": app.config["SECRET_KEY"],
        "PORTAL_VAULT_KEY": app.config["PORTAL_VAULT_KEY"],
        "PORTAL_INSTANCE_PATH": str(tmp_path / "gunicorn-instance"),
        "PORTAL_RECORDINGS_DIR": str(tmp_path / "gunicorn-recordings"),
        "PORTAL_ACCESS_LOG": "0",
        "PORTAL_THREADS": "32",
    }
    env.pop("REDIS_URL", None)
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:portal.gunicorn_conf", "app:app"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(f"{base}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return proc.poll() is not None  # died: stop waiting

    try:
        assert wait_for(up, timeout=30, interval=0.2) and proc.poll() is None, (
            tmp_path / "gunicorn.log"
        ).read_text(errors="replace")[-2000:]
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        log.close()


def test_sigterm_closes_live_terminals_with_a_reason(
    app, gunicorn_portal, make_user, sshd_machine, token_for
):
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    base, proc = gunicorn_portal
    owner = make_user("sigtermowner")
    machine = sshd_machine(owner)
    ws = base.replace("http://", "ws://")
    t = Term(f"{ws}/api/terminal/{machine.agent_id}/ws?token={token_for(owner)}")
    sid = t.wait_control("ready")["session_id"]
    t.run("echo up$((2+3))", r"up5")

    proc.send_signal(signal.SIGTERM)
    msg = t.wait_control("error", timeout=20)
    assert "restarting" in msg["message"] or "shutting down" in msg["message"]
    t.drain_close()
    t.close()
    assert proc.wait(30) == 0  # a graceful exit, not a kill

    with app.app_context():
        row = db.session.get(TerminalSession, sid)
        assert row.status == "closed"
        assert "restarting" in row.close_reason or "shutting down" in row.close_reason
        assert row.ended_at is not None
        db.session.remove()
    # The server is gone, and nothing of it holds the port.
    with pytest.raises(requests.RequestException):
        requests.get(f"{base}/health", timeout=2)
